"""The rule book: every name pattern, length limit, reserved mount and path rule, once.

Plan validation (the msgspec model), ``target discover``, ``source apply-plan`` /
``verify-plan``, ``target protect`` (the annotations it writes), ``target connect`` and the
wrapper all check names here, so they cannot disagree: whatever discover writes passes
``plan validate``, and whatever ``plan validate`` accepts passes apply-plan's and protect's own
(defence-in-depth) checks. ``tests/unit/test_rule_agreement.py`` proves it with generated
names at and beyond every limit. The Go runtime implements the name, length, mount and address
rules it applies (``runtime/internal/contract/names.go``) and runs ``spec/contract/rules.json``,
generated from these limits by ``tests/unit/test_contract_rules.py``, which fails when the file
is stale. The dangerous targets of a vault field (loader and interpreter variables,
:data:`DANGEROUS_ENV`) are shared with the Go injector through
``spec/contract/dangerous-env.json``.

Standard library only (the stdlib-only :mod:`cloudtaser.contract` builds on it).

Naming convention (documented in docs/plan-format.md): policy and role of a tenant are both
named ``cloudtaser-<plan name>-<tenant name>``, lower-cased (OpenBao stores policy and role
names lower-cased). The plan name identifies the cluster, so two plans from two clusters
applied to one vault never overwrite each other's objects, even when they share tenant names
and vault paths. ``apply-plan`` creates them and ``protect`` writes the role into
``cloudtaser.io/vault-role``.

Every pattern ends in ``(?!\\n)$``: msgspec matches with ``re.search``, where a bare ``$``
would also accept a trailing newline. The ``is_*`` helpers use ``fullmatch`` as well.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Collection
from typing import Final, Literal

from cloudtaser.sanitize import clip  # standard library only as well: the one truncation

__all__ = [
    "APPROVAL_IDENTITY",
    "ARMORED_SIGNATURE",
    "DANGEROUS_ENV",
    "DANGEROUS_ENV_PREFIXES",
    "DEFAULT_AUTH_MOUNT",
    "DEFAULT_ENV_NAME_RULE",
    "DEFAULT_KV_MOUNT",
    "DEFAULT_PATH_TEMPLATE",
    "DIGEST",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "ENV_NAME",
    "ENV_NAME_RULES",
    "ENV_PREFIX",
    "ENV_VAR",
    "FIELD_NAME",
    "FILE_PATH",
    "ISOLATED_PATH_TEMPLATE",
    "JWT_AUTH_TYPE",
    "KUBERNETES_AUTH_TYPE",
    "MAX_APPROVALS",
    "MAX_APPROVAL_IDENTITY",
    "MAX_ARMORED_SIGNATURE",
    "MAX_AUDIENCE_CHARS",
    "MAX_DNS_LABEL",
    "MAX_DNS_SUBDOMAIN",
    "MAX_ENV_VAR",
    "MAX_FIELD_NAME",
    "MAX_FILE_MODE",
    "MAX_FILE_PATH",
    "MAX_MOUNT",
    "MAX_OBJECT_NAME",
    "MAX_PLAN_NAME",
    "MAX_ROLE_NAME",
    "MAX_SECRET_FILES",
    "MAX_SECRET_FILES_ANNOTATION",
    "MAX_SEGMENT",
    "MAX_SEGMENT_CHARS",
    "MAX_VAULT_NAMESPACE",
    "MAX_VAULT_PATH",
    "MOUNT",
    "ONE_LINE",
    "PLAN_NAME",
    "PREFIX",
    "RELAXED_ENV_NAMES_SINCE",
    "RESERVED_ENV_PREFIXES",
    "RESERVED_MOUNTS",
    "RESERVED_NAMESPACES",
    "RUNTIME_NAMESPACE",
    "SOURCE_REF",
    "VAULT_PATH",
    "EnvNameRule",
    "accepted_dangerous_env_problem",
    "auth_mount_problem",
    "dangerous_env_problem",
    "env_name_problem",
    "env_name_rule_for",
    "file_path_problem",
    "fit_segment",
    "hidden_character_problem",
    "is_dangerous_env",
    "is_dns_label",
    "is_dns_subdomain",
    "is_env_name",
    "is_env_var",
    "is_field_name",
    "is_plan_name",
    "is_reserved_env",
    "is_reserved_mount",
    "kv_mount_problem",
    "path_in_prefix",
    "policy_name",
    "reserved_mount",
    "role_name",
    "safe_mount_path",
    "safe_segment",
    "shown",
    "template_problem",
    "tenant_scope",
    "usable_mount",
    "valid_audience",
    "valid_role_name",
    "valid_vault_namespace",
    "vault_namespace_problem",
    "vault_path_problem",
]

PREFIX: Final = "cloudtaser"
#: A plan that records no auth mount uses this Kubernetes auth mount (``auth/kubernetes``).
DEFAULT_AUTH_MOUNT: Final = "kubernetes"
#: The vault auth method type cloudtaser logs pods in with (compared case-insensitively:
#: a vault reports mount types as it stores them).
KUBERNETES_AUTH_TYPE: Final = "kubernetes"
#: The vault auth method type that checks ServiceAccount tokens offline with the cluster's
#: public signing keys (``metadata.authMethod: jwt``; the vault never calls the cluster).
JWT_AUTH_TYPE: Final = "jwt"
#: The namespace of the runtime (injector) and of connect's token reviewer, unless told otherwise.
RUNTIME_NAMESPACE: Final = "cloudtaser-system"
#: The KV v2 mount ``{mount}`` stands for when the plan records no ``kvMount``.
DEFAULT_KV_MOUNT: Final = "secret"
#: The vault path naming of discover; also the tenant scope of a plan that records none.
DEFAULT_PATH_TEMPLATE: Final = "{mount}/data/{namespace}/{secret}"
#: ``--isolate``: every cluster has its own subtree.
ISOLATED_PATH_TEMPLATE: Final = "{mount}/data/{cluster}/{namespace}/{secret}"

#: Mount names the vault reserves: never a KV engine or a cluster's Kubernetes auth method.
#: Compared case-insensitively on the first segment (``SYS``, ``Sys/x`` are reserved too).
RESERVED_MOUNTS: Final = frozenset({"sys", "auth", "identity", "cubbyhole", "token"})
#: Names OpenBao refuses for a namespace (``sys/namespaces/<name>``: "is a reserved path");
#: refused here in any letter case, in every segment of a nested namespace path.
RESERVED_NAMESPACES: Final = frozenset({"root", "sys", "audit", "auth", "cubbyhole", "identity"})

# --- length limits ----------------------------------------------------------------------------

MAX_DNS_LABEL: Final = 63
MAX_DNS_SUBDOMAIN: Final = 253
MAX_PLAN_NAME: Final = 63
MAX_ENV_VAR: Final = 256
MAX_FIELD_NAME: Final = 253
#: A whole ``<mount>/data/<path>``.
MAX_VAULT_PATH: Final = 512
#: One segment of a vault path, and a whole mount path.
MAX_SEGMENT: Final = 128
#: The name issue 18 (sec) gave the same limit.
MAX_SEGMENT_CHARS: Final = MAX_SEGMENT
MAX_MOUNT: Final = 128
#: A whole vault namespace path (``eu/prod``), sent as ``X-Vault-Namespace``.
MAX_VAULT_NAMESPACE: Final = 256
#: A policy or role name (``cloudtaser-<plan>-<tenant>`` is at most 138).
MAX_OBJECT_NAME: Final = 140
#: A Kubernetes-auth role name the vault accepts (:func:`valid_role_name`).
MAX_ROLE_NAME: Final = 255

# --- patterns -----------------------------------------------------------------------------------

#: A Kubernetes DNS-1123 label (namespaces, tenant names).
DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(?!\n)$"
#: A Kubernetes DNS-1123 subdomain (workload, Secret and ServiceAccount names).
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(?!\n)$"
#: A plan name: goes into vault policy and role names, so letters, digits, '.', '_', '-'.
PLAN_NAME: Final = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?(?!\n)$"
#: A POSIX-portable environment variable name (the ``identifier`` env-name rule).
ENV_VAR: Final = r"^[A-Za-z_][A-Za-z0-9_]*(?!\n)$"
#: The widest environment variable name any plan may map (the ``relaxed`` env-name rule):
#: printable ASCII without ``=``, ``,``, ``;`` or ``$`` and without a blank at either end. The
#: plan's ``metadata.envNameRule`` narrows it (:func:`env_name_problem`).
ENV_NAME: Final = r"^[!-#%-+\--:<>-~](?:[ -#%-+\--:<>-~]*[!-#%-+\--:<>-~])?(?!\n)$"
#: An ``envFrom`` prefix a finalized reference records (the mapped names it forms are
#: checked as :data:`ENV_NAME` and against the plan's rule).
ENV_PREFIX: Final = r"^[ -#%-+\--:<>-~]+(?!\n)$"
#: A vault field name / Kubernetes Secret key (letters, digits, '.', '_', '-'; not '.' or '..').
FIELD_NAME: Final = r"^(?!\.{1,2}$)[A-Za-z0-9._-]+(?!\n)$"
#: One path segment in vault: letters, digits, '.', '_', '-', never starting with '.' (so never
#: '.', '..', '...' or '.db'): the same rule as :func:`safe_segment`.
_SEGMENT_CHARS: Final = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
#: A mount may not start with a vault-reserved mount, in any case (:data:`RESERVED_MOUNTS`).
_NOT_RESERVED: Final = r"(?!(?i:sys|auth|identity|cubbyhole|token)(?:/|$))"
#: ``<mount>/data/<segment>[/<segment>...]``, the KV v2 API path of a non-reserved mount.
VAULT_PATH: Final = rf"^{_NOT_RESERVED}{_SEGMENT_CHARS}/data(/{_SEGMENT_CHARS})+(?!\n)$"
#: A vault mount name (KV mount, auth mount): one or more safe segments, not reserved.
MOUNT: Final = rf"^{_NOT_RESERVED}{_SEGMENT_CHARS}(/{_SEGMENT_CHARS})*(?!\n)$"
#: A free-text value that must stay on one line and printable (reasons, notes, sources): no
#: C0/C1 control character and no bidi/invisible format character, even written as a YAML
#: escape ("\u202e"), so no plan value can rewrite a reviewer's terminal.
ONE_LINE: Final = (
    r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*(?!\n)$"
)
#: Where a secret came from (``Secret/name``, ``vault-agent:name`` ...).
SOURCE_REF: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*(?!\n)$"

# --- approvals (docs/approval.md) ---------------------------------------------------------------

#: At most this many approvals in one plan (a hostile ``approvals:`` section is bounded).
MAX_APPROVALS: Final = 64
MAX_APPROVAL_IDENTITY: Final = 256
#: An armored SSH signature (an RSA-16384 one with its key is about 6 KiB of text).
MAX_ARMORED_SIGNATURE: Final = 16384
#: An approver's principal as in an allowed-signers file (``alice@example.com``, what
#: ``ssh-keygen -Y verify -I`` takes): no blank, comma, quote or pattern character.
APPROVAL_IDENTITY: Final = r"^[A-Za-z0-9@._+=:/%~-]+(?!\n)$"
#: A reviewed-content digest (:mod:`cloudtaser.plan.canonical`).
DIGEST: Final = r"^sha256:[0-9a-f]{64}(?!\n)$"
#: An armored SSHSIG as ``ssh-keygen -Y sign`` writes it: base64 lines between the armor lines.
ARMORED_SIGNATURE: Final = (
    r"^-----BEGIN SSH SIGNATURE-----\n(?:[A-Za-z0-9+/=]{1,76}\n){1,300}"
    r"-----END SSH SIGNATURE-----\n?(?!\n)$"
)

#: A file inside a Secret volume (``items[].path``; ``file`` of ``cloudtaser.io/secret-files``):
#: the kubelet's own rules, tightened by one: relative, segments of ``[A-Za-z0-9._-]``, none
#: empty, none ``.`` or starting with ``..`` (the kubelet's own ``..data``), no leading ``/``;
#: at most :data:`MAX_FILE_PATH` (Go: ``contract.ValidFilePath``).
FILE_PATH: Final = r"^(?!\.\.|\.(?:/|$))[A-Za-z0-9._-]+(/(?!\.\.|\.(?:/|$))[A-Za-z0-9._-]+)*(?!\n)$"
MAX_FILE_PATH: Final = 4096
#: A file mode (``mode``, ``defaultMode``): 0..0o777, as the kubelet accepts.
MAX_FILE_MODE: Final = 0o777
#: Files per migrated volume in ``cloudtaser.io/secret-files``.
MAX_SECRET_FILES: Final = 4096
#: The whole ``cloudtaser.io/secret-files`` value, in bytes.
MAX_SECRET_FILES_ANNOTATION: Final = 65536

_DNS_LABEL_RE: Final = re.compile(DNS_LABEL)
_DNS_SUBDOMAIN_RE: Final = re.compile(DNS_SUBDOMAIN)
_PLAN_NAME_RE: Final = re.compile(PLAN_NAME)
_ENV_VAR_RE: Final = re.compile(ENV_VAR)
_ENV_NAME_RE: Final = re.compile(ENV_NAME)
_FIELD_NAME_RE: Final = re.compile(FIELD_NAME)
_VAULT_PATH_RE: Final = re.compile(VAULT_PATH)
_FILE_PATH_RE: Final = re.compile(FILE_PATH)
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_ROLE_RE: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ROLE_NAME - 1}}}")


def is_dns_label(value: str) -> bool:
    """A Kubernetes namespace / tenant name."""
    return len(value) <= MAX_DNS_LABEL and _DNS_LABEL_RE.fullmatch(value) is not None


def is_dns_subdomain(value: str) -> bool:
    """A Kubernetes object name (workload, Secret, ServiceAccount, volume)."""
    return len(value) <= MAX_DNS_SUBDOMAIN and _DNS_SUBDOMAIN_RE.fullmatch(value) is not None


def is_plan_name(value: str) -> bool:
    """A plan name (part of every policy and role name)."""
    return len(value) <= MAX_PLAN_NAME and _PLAN_NAME_RE.fullmatch(value) is not None


def is_env_var(value: str) -> bool:
    """A portable environment variable name."""
    return len(value) <= MAX_ENV_VAR and _ENV_VAR_RE.fullmatch(value) is not None


def is_env_name(value: str, rule: str | None = None) -> bool:
    """An environment variable name under the env-name ``rule`` (:func:`env_name_problem`)."""
    return env_name_problem(value, rule) is None


def is_field_name(value: str) -> bool:
    """A vault field / Secret key name."""
    return len(value) <= MAX_FIELD_NAME and _FIELD_NAME_RE.fullmatch(value) is not None


def file_path_problem(path: str) -> str | None:
    """Why ``path`` is not a file path inside a volume (:data:`FILE_PATH`), or None."""
    if not isinstance(path, str) or not path:
        return "is empty"
    if len(path) > MAX_FILE_PATH:
        return f"is longer than {MAX_FILE_PATH} characters"
    if _FILE_PATH_RE.fullmatch(path) is None:
        return (
            "is not a relative path of segments of letters, digits, '.', '_', '-' (none "
            "empty, '.' or starting with '..', no leading '/')"
        )
    return None


def policy_name(plan_name: str, tenant_name: str) -> str:
    """The ACL policy of one tenant of one plan (inputs are validated plan names)."""
    return f"{PREFIX}-{plan_name}-{tenant_name}".lower()


def role_name(plan_name: str, tenant_name: str) -> str:
    """The Kubernetes-auth role of one tenant of one plan."""
    return f"{PREFIX}-{plan_name}-{tenant_name}".lower()


def valid_role_name(name: str) -> bool:
    """True for a Kubernetes-auth role name the vault accepts (letters, digits, '.', '_', '-';
    at most 255 characters, starting with a letter or digit)."""
    return _ROLE_RE.fullmatch(name) is not None


#: A ServiceAccount token audience (apply-plan's role ``audience``, the injector's projected
#: token): no blanks, quotes or control characters.
MAX_AUDIENCE_CHARS: Final = 256
_AUDIENCE_RE: Final = re.compile(r"[A-Za-z0-9._:/@+=-]+")


def valid_audience(audience: str) -> bool:
    """True for a token audience both the vault role and the projected token may carry."""
    return len(audience) <= MAX_AUDIENCE_CHARS and _AUDIENCE_RE.fullmatch(audience) is not None


def safe_segment(segment: str) -> bool:
    """True for one safe segment of a vault path or mount: letters, digits, '.', '_', '-', not
    starting with '.' (so never '.' or '..'), not empty."""
    return segment not in {".", ".."} and _SEGMENT_RE.fullmatch(segment) is not None


def safe_mount_path(mount: str) -> bool:
    """True for a non-empty mount path (``kubernetes``, ``k8s/eu-prod``) of safe segments."""
    return bool(mount) and all(safe_segment(s) for s in mount.split("/"))


def is_reserved_mount(mount: str) -> bool:
    """True when the mount's first segment is reserved by the vault (any letter case)."""
    return mount.split("/", maxsplit=1)[0].lower() in RESERVED_MOUNTS


def reserved_mount(mount: str) -> bool:
    """Alias of :func:`is_reserved_mount` (the vault routes ``SYS/`` like ``sys/``)."""
    return is_reserved_mount(mount)


def usable_mount(mount: str) -> bool:
    """The one rule for a KV or auth mount every command applies: safe segments (none
    starting with a dot), not reserved in any case, at most :data:`MAX_MOUNT` characters."""
    return _mount_problem(mount, "mount") is None


def shown(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message: every control and non-ASCII character escaped (so the
    message shows why a name fails), cut at ``limit`` by :func:`cloudtaser.sanitize.clip`."""
    return repr(clip(value.encode("unicode_escape").decode("ascii"), limit))


def fit_segment(name: str) -> tuple[str, bool]:
    """``name`` as one vault path segment: unchanged when it fits :data:`MAX_SEGMENT`, else
    shortened to exactly that length as ``<prefix>-<8 hex of its SHA-256>`` (``True``).

    Kubernetes names reach 253 characters, vault path segments only 128. The digest keeps the
    mapping injective in practice: two long names sharing a prefix get different segments.
    The same name always gives the same segment, so a rediscovery writes the same paths.
    """
    if len(name) <= MAX_SEGMENT:
        return name, False
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    prefix = name[: MAX_SEGMENT - len(digest) - 1].rstrip(".-_")
    return f"{prefix}-{digest}", True


def _mount_problem(mount: str, what: str) -> str | None:
    if not mount:
        return f"{what} is empty"
    if len(mount) > MAX_MOUNT:
        return f"{what} {shown(mount)} is longer than {MAX_MOUNT} characters"
    if not safe_mount_path(mount):
        return (
            f"{what} {shown(mount)} is not a safe mount name (segments of letters, digits, "
            "'.', '_', '-', separated by '/')"
        )
    if is_reserved_mount(mount):
        first = mount.split("/", maxsplit=1)[0]
        return f"{what} {shown(mount)} is reserved by the vault ({first!r})"
    return None


def kv_mount_problem(mount: str) -> str | None:
    """Why ``mount`` cannot be a KV v2 mount of a plan, or None."""
    return _mount_problem(mount, "KV mount")


def vault_namespace_problem(namespace: str) -> str | None:
    """Why ``namespace`` (without surrounding slashes) is not a vault namespace path, or None:
    segments of the safe characters (:func:`safe_segment`, at most :data:`MAX_SEGMENT` each),
    none a name the vault reserves (:data:`RESERVED_NAMESPACES`, any case), at most
    :data:`MAX_VAULT_NAMESPACE` characters. The pods' ``cloudtaser.io/vault-namespace``, the
    injector's default and the CLI's own ``--namespace`` all pass this one rule."""
    if not namespace:
        return "is empty"
    if len(namespace) > MAX_VAULT_NAMESPACE:
        return f"is longer than {MAX_VAULT_NAMESPACE} characters"
    for segment in namespace.split("/"):
        if not safe_segment(segment) or len(segment) > MAX_SEGMENT:
            return (
                f"segment {shown(segment)} is not letters, digits, '.', '_', '-' (not starting "
                f"with '.', at most {MAX_SEGMENT} characters)"
            )
        if segment.lower() in RESERVED_NAMESPACES:
            return f"segment {shown(segment)} is a name the vault reserves"
    return None


def valid_vault_namespace(namespace: str) -> bool:
    """True for a vault namespace path (:func:`vault_namespace_problem`)."""
    return vault_namespace_problem(namespace) is None


def auth_mount_problem(mount: str) -> str | None:
    """Why ``mount`` cannot be the Kubernetes auth mount of a plan, or None."""
    return _mount_problem(mount, "auth mount")


def vault_path_problem(vault_path: str, *, allowed_mount: str | None = None) -> str | None:
    """Why ``vault_path`` is not a safe KV v2 API path ``<mount>/data/<path>``, or None.

    Refuses anything that could widen a policy or escape into another part of the API:
    globs (``*``, ``+``), ``..`` and ``.`` segments, quotes, blanks, control characters,
    templates, ``sys/`` and the other reserved mounts (any case), a mount other than
    ``allowed_mount``, empty segments, segments over :data:`MAX_SEGMENT` and paths over
    :data:`MAX_VAULT_PATH` characters.
    """
    if not vault_path:
        return "empty vault path"
    what = f"vault path {shown(vault_path)}"
    if len(vault_path) > MAX_VAULT_PATH:
        return f"{what} is longer than {MAX_VAULT_PATH} characters"
    for segment in vault_path.split("/"):
        if segment in {".", ".."}:
            return f"{what} contains a {segment!r} segment"
        if not safe_segment(segment):
            return (
                f"{what} has an unsafe segment: only letters, digits, '.', '_' and '-' are "
                "allowed (no globs, quotes, blanks or empty segments)"
            )
        if len(segment) > MAX_SEGMENT:
            return f"{what} has a segment longer than {MAX_SEGMENT} characters"
    if _VAULT_PATH_RE.fullmatch(vault_path) is None:
        return f"{what} is not a KV v2 data path (<mount>/data/<path>)"
    mount = vault_path.partition("/data/")[0]
    if is_reserved_mount(mount):
        return f"{what} points into the reserved {mount.split('/')[0]!r} mount, not a KV engine"
    if allowed_mount is not None and mount != allowed_mount:
        return f"{what} is outside the plan's KV mount {allowed_mount!r}"
    return None


# --- path templates and tenant scopes (the plan-level checks are model.isolation_problems) ----
#
# One tenant must never gain another tenant's secrets through the plan. Discover names paths
# with an injective template ({namespace} is a whole segment), so each tenant owns a disjoint
# *scope*; discover skips (with a reason) anything outside it; apply-plan, protect and
# 'plan validate' refuse a plan in which an active workload names a path outside its tenant's
# scope, a path inside another tenant's scope, a path several tenants use, or a second KV mount,
# unless a reviewer marked that secret ``shared: true``.

_TEMPLATE_FIELDS: Final = frozenset({"mount", "cluster", "namespace", "secret"})
_SCOPE_SEGMENT: Final = "[A-Za-z0-9_-][A-Za-z0-9._-]*"


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot name vault paths safely, or None.

    It must use ``{namespace}`` and ``{secret}`` exactly once each; ``{namespace}`` must be a
    whole path segment after ``<mount>/data/`` and ``{secret}`` must share its segment with no
    other placeholder. Then two (namespace, Secret) pairs never render the same path (the
    template is injective): ``{mount}/data/{namespace}-{secret}`` maps ``team``/``x-db`` and
    ``team-x``/``db`` to one path and is refused.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return str(exc)
    counts: dict[str, int] = {}
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in _TEMPLATE_FIELDS or spec or conversion:
            return (
                f"unknown placeholder {{{name}}}; use {{mount}}, {{cluster}}, {{namespace}} and "
                "{secret}"
            )
        counts[name] = counts.get(name, 0) + 1
    if counts.get("namespace") != 1 or counts.get("secret") != 1:
        return (
            "must contain {namespace} and {secret} exactly once (otherwise tenants or Secrets "
            "would share vault paths)"
        )
    segments = template.split("/")
    if "data" not in segments[1:]:
        return "does not render a KV v2 API path <mount>/data/<path>"
    after_data = segments[segments.index("data", 1) + 1 :]
    if "{namespace}" not in after_data:
        return (
            "must have {namespace} as a whole path segment after <mount>/data/ (e.g. "
            "{mount}/data/{namespace}/{secret}); anything else lets two tenants share a path"
        )
    secret_segment = next(s for s in segments if "{secret}" in s)
    if secret_segment.count("{") != 1:
        return "must not put another placeholder into the path segment of {secret}"
    return None


def tenant_scope(template: str, *, namespace: str, mount: str, cluster: str) -> re.Pattern[str]:
    """The paths ``template`` can give ``namespace``: ``{secret}`` stands for any segment (and,
    when it ends the template, any deeper path below it, as Vault Agent paths may be)."""
    values = {"mount": mount, "cluster": cluster, "namespace": namespace}
    out: list[str] = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(re.escape(literal))
        if name == "secret":
            out.append(_SCOPE_SEGMENT)
        elif name is not None:
            out.append(re.escape(values[name]))
    if template.endswith("{secret}"):
        out.append(f"(?:/{_SCOPE_SEGMENT})*")
    return re.compile("".join(out))


def path_in_prefix(path: str, prefix: str | None) -> bool:
    """True when ``path`` is ``prefix`` or lies below it."""
    return prefix is not None and (path == prefix or path.startswith(prefix + "/"))


# --- environment variable names: the cluster's rule, and what the annotation can carry ---------
#
# Which names reach a container's environment is the cluster's decision, and it changed:
#
# * ``kubernetes``: Kubernetes' ``validation.IsEnvVarName`` (apimachinery
#   ``pkg/util/validation``), ``[-._a-zA-Z][-._a-zA-Z0-9]*`` and not ``.``, ``..`` or a name
#   starting with ``..``: ``env[].name``, ``envFrom`` prefixes, and the kubelet's filter of
#   ``envFrom`` keys (a key failing it was skipped with an ``InvalidEnvironmentVariableNames``
#   event). Note that ``tls.crt`` and ``config-json`` pass it.
# * ``relaxed``: ``validation.IsRelaxedEnvVarName`` (feature gate
#   ``RelaxedEnvironmentVariableValidation``: alpha in 1.30, on by default from 1.32, GA and
#   locked on from 1.34): any printable ASCII character but ``=`` (``1st``, ``my var``, ``a:b``).
# * ``identifier``: the portable ``[A-Za-z_][A-Za-z0-9_]*`` every shell can name; the rule of a
#   plan that records none (plans written before discover read the cluster's version).
#
# ``target discover`` records the cluster's rule in ``metadata.envNameRule``
# (:func:`env_name_rule_for` its API server version); every command that loads the plan checks
# the mapped names against it. Whatever the rule, a name must fit the ``cloudtaser.io/env-map``
# annotation, whose entries ``,`` ``;`` and ``=`` separate and whose tokens lose blanks at
# either end: such names cannot be carried and are refused with that reason (discover leaves
# the key out with a note); so is ``$``, which would meet the kubelet's ``$(VAR)`` expansion
# where the injector hands the mapping to the wrapper. The annotation itself (the injector,
# the wrapper) accepts the widest rule, ``relaxed`` (:data:`ENV_NAME`): the plan narrows it,
# protect writes only from a validated plan.

#: An env-name rule a plan may record (``metadata.envNameRule``).
EnvNameRule = Literal["identifier", "kubernetes", "relaxed"]
#: The env-name rules, narrowest first.
ENV_NAME_RULES: Final[tuple[EnvNameRule, ...]] = ("identifier", "kubernetes", "relaxed")
#: The rule of a plan that records none.
DEFAULT_ENV_NAME_RULE: Final[EnvNameRule] = "identifier"
#: The first Kubernetes minor version whose API server and kubelet use ``relaxed`` by default.
RELAXED_ENV_NAMES_SINCE: Final = (1, 32)
_KUBERNETES_ENV_RE: Final = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
#: What the env-map annotation cannot carry: its separators, and ``$`` (the injector hands the
#: mapping to the wrapper in an env value, where the kubelet expands ``$(...)``).
_UNCARRIED: Final = (",", ";", "=", "$")


def env_name_rule_for(major: str, minor: str) -> EnvNameRule:
    """The env-name rule of a cluster whose API server reports ``major``/``minor``
    (``/version``; a minor such as ``32+`` counts as 32): ``relaxed`` from 1.32 on, else
    ``kubernetes``. Unparsable: ``kubernetes`` (the narrower Kubernetes rule: a key it leaves
    out keeps its Secret, a wrong ``relaxed`` would map a variable the pods never had)."""
    digits_major = "".join(c for c in major if c.isdigit())
    digits_minor = "".join(c for c in minor.split("+", maxsplit=1)[0] if c.isdigit())
    if not digits_major or not digits_minor:
        return "kubernetes"
    version = (int(digits_major), int(digits_minor))
    return "relaxed" if version >= RELAXED_ENV_NAMES_SINCE else "kubernetes"


def env_name_problem(name: str, rule: str | None = None) -> str | None:
    """Why ``name`` cannot be a mapped environment variable under the env-name ``rule``
    (:data:`ENV_NAME_RULES`; None: :data:`DEFAULT_ENV_NAME_RULE`), or None."""
    rule = rule or DEFAULT_ENV_NAME_RULE
    what = f"environment variable name {shown(name)}"
    if not name:
        return "empty environment variable name"
    if len(name) > MAX_ENV_VAR:
        return f"{what} is longer than {MAX_ENV_VAR} characters"
    if rule == "identifier" and _ENV_VAR_RE.fullmatch(name) is None:
        return (
            f"{what} is not a portable identifier [A-Za-z_][A-Za-z0-9_]* (env-name rule identifier)"
        )
    if rule == "kubernetes" and (
        _KUBERNETES_ENV_RE.fullmatch(name) is None or name.startswith("..") or name == "."
    ):
        return (
            f"{what} is not a Kubernetes environment variable name [-._a-zA-Z][-._a-zA-Z0-9]* "
            "(not '.', not starting with '..'; env-name rule kubernetes)"
        )
    if any(c < " " or c > "~" for c in name):
        return f"{what} is not printable ASCII"
    uncarried = [c for c in _UNCARRIED if c in name]
    if uncarried or name != name.strip(" "):
        why = (
            f"contains {', '.join(repr(c) for c in uncarried)}"
            if uncarried
            else "starts or ends with a blank"
        )
        return (
            f"{what} {why}: the cloudtaser.io/env-map annotation cannot carry it (',' ';' and "
            "'=' separate its entries, '$' would meet the kubelet's $(VAR) expansion on the way "
            "to the wrapper, blanks around a name are trimmed)"
        )
    if rule not in ENV_NAME_RULES:
        return f"unknown env-name rule {rule!r} (one of {', '.join(ENV_NAME_RULES)})"
    return None


# --- dangerous targets of a vault field (spec/contract/dangerous-env.json) ----------------------
#
# A vault field becomes an environment variable of the application. Some variables decide which
# code a process loads or runs (the dynamic loader, shells, interpreters, trust stores): whoever
# can write the tenant's vault path could run code in the pod through them. Such a target is a
# reviewer's decision, never discover's: ``plan validate``, apply-plan and protect refuse it
# unless the workload's reviewed ``acceptedDangerousEnv`` lists it (:func:`dangerous_env_problem`,
# applied by ``model.rule_problem`` on every plan load), protect writes that list into
# ``cloudtaser.io/accept-dangerous-env`` and the injector denies a pod whose env-map feeds one
# that the annotation does not name. The runtime's own control names can never be accepted.
# Compared case-sensitively, as the kernel and libc compare names (``path`` is not ``PATH``).
# ``spec/contract/dangerous-env.json`` holds the same lists for the Go side; a test in each
# language checks its list against that file.

#: Variables that change which code a process loads or runs (exact names).
DANGEROUS_ENV: Final = frozenset(
    {
        "BASHOPTS",
        "BASH_ENV",
        "CLASSPATH",
        "CORECLR_ENABLE_PROFILING",
        "CORECLR_PROFILER_PATH",
        "CURL_CA_BUNDLE",
        "DOTNET_STARTUP_HOOKS",
        "EDITOR",
        "ENV",
        "GCONV_PATH",
        "GIT_EXEC_PATH",
        "GIT_SSH_COMMAND",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "IFS",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "LOCPATH",
        "LUA_CPATH",
        "LUA_INIT",
        "LUA_PATH",
        "MALLOC_CHECK_",
        "NLSPATH",
        "NODE_EXTRA_CA_CERTS",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PAGER",
        "PATH",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "PROMPT_COMMAND",
        "PS4",
        "PYTHONHOME",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "REQUESTS_CA_BUNDLE",
        "RUBYLIB",
        "RUBYOPT",
        "SHELLOPTS",
        "SSL_CERT_DIR",
        "SSL_CERT_FILE",
        "TCLLIBPATH",
        "VISUAL",
        "_JAVA_OPTIONS",
    }
)
#: Every name starting with one of these is dangerous as well (loader, dyld, exported bash
#: functions, the runtime's own control variables).
DANGEROUS_ENV_PREFIXES: Final = ("LD_", "DYLD_", "BASH_FUNC_", "CLOUDTASER_")
#: The runtime's own control names: no vault field may feed one, accepted or not.
RESERVED_ENV_PREFIXES: Final = ("CLOUDTASER_",)


def is_dangerous_env(name: str) -> bool:
    """True for a variable that changes which code a process loads or runs
    (:data:`DANGEROUS_ENV`, :data:`DANGEROUS_ENV_PREFIXES`)."""
    return name in DANGEROUS_ENV or name.startswith(DANGEROUS_ENV_PREFIXES)


def is_reserved_env(name: str) -> bool:
    """True for one of the runtime's own control names (:data:`RESERVED_ENV_PREFIXES`)."""
    return name.startswith(RESERVED_ENV_PREFIXES)


_ACCEPT_HOW: Final = (
    "rename the variable, or list it in the workload's acceptedDangerousEnv (a reviewer's "
    "decision, signed with the plan)"
)


def dangerous_env_problem(name: str, accepted: Collection[str] = ()) -> str | None:
    """Why no vault field may feed the environment variable ``name`` of a workload whose
    ``acceptedDangerousEnv`` is ``accepted``, or None.

    A reserved name is refused even when accepted; any other dangerous name unless accepted.
    """
    if is_reserved_env(name):
        prefix = next(p for p in RESERVED_ENV_PREFIXES if name.startswith(p))
        return (
            f"{shown(name)} is reserved for the cloudtaser runtime's own control variables "
            f"({prefix}*): no vault field may feed it, not even when accepted; rename the variable"
        )
    if is_dangerous_env(name) and name not in accepted:
        return (
            f"{shown(name)} is a loader, shell or interpreter variable: whoever can write the "
            f"vault path could run code in the pod through it; {_ACCEPT_HOW}"
        )
    return None


def accepted_dangerous_env_problem(name: str, mapped: Collection[str]) -> str | None:
    """Why ``name`` cannot be an entry of a workload's ``acceptedDangerousEnv`` when the
    workload maps vault fields to ``mapped``, or None. A reviewer's typo must not be silently
    ignored: the entry must be dangerous, not reserved, and a variable the workload maps."""
    if is_reserved_env(name):
        return (
            f"{shown(name)} is reserved for the cloudtaser runtime's own control variables and "
            "can never be accepted; remove it"
        )
    if not is_dangerous_env(name):
        return (
            f"{shown(name)} is not a dangerous variable (see docs/plan-format.md, "
            "acceptedDangerousEnv), so it needs no acceptance; remove it (a typo?)"
        )
    if name not in mapped:
        return (
            f"{shown(name)} is accepted but no vault field of the workload is mapped to it; "
            "remove it (a typo?)"
        )
    return None


# --- what a reviewer sees -----------------------------------------------------------------------

#: What a reviewer's terminal does not show as written: NUL (the YAML parser stops there
#: silently), C0 controls but newline (and CR of a CRLF), DEL, C1 controls, and the Unicode
#: bidi / invisible format characters that reorder or hide text.
_HIDDEN_CHARACTERS: Final = re.compile(
    "[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u2069\ufeff]|\r(?!\n)"
)


def hidden_character_problem(text: str) -> str | None:
    """A plan must read the same to a reviewer's eyes and to the parser: why not, or None."""
    found = _HIDDEN_CHARACTERS.search(text, 1 if text.startswith("\ufeff") else 0)
    if found is None:
        return None
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    char = found.group()
    name = f"U+{ord(char):04X}"
    return (
        f"line {line}, column {column}: the plan contains the control or invisible character "
        f"{name}; a terminal or a review tool may not show it, so what a reviewer sees would "
        "not be what runs. Remove it (only printable text, newlines and CRLF are allowed; "
        "write tabs as spaces)"
    )
