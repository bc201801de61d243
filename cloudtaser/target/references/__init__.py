"""Who else uses a Secret.

The reference scan that errs on keeping, owner/manager detection, API readers, and the
key-level rule that decides whether deleting a Secret could lose data.
"""
