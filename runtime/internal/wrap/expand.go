package wrap

// expand applies the injector's expansion plan (`wrap --expand=`, contract.ExpandPlan) with
// the values just fetched: the expanded env entries join got.vars (they may hold secret
// values: they replace the inherited entries in the child's environment, and a resident
// wrapper keeps them in locked memory), and Argv becomes the expanded command line. The
// plan always applies to the command line as the kubelet gave it, so a rotation expands
// again from the same text.
func (w *Wrapper) expand(got *fetched) error {
	if len(w.Expand.Args) == 0 && len(w.Expand.Env) == 0 {
		return nil
	}
	if w.rawArgv == nil {
		w.rawArgv = w.Argv
	}
	argv, env, err := w.Expand.Apply(w.rawArgv, w.Environ, got.vars)
	if err != nil {
		return fail(ExitConfig, "%v", err)
	}
	w.Argv = argv
	got.vars = append(got.vars, env...)
	return nil
}
