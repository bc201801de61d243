// Package inject is the admission logic of the injector: given a pod CREATE request it
// returns a decision, allow with the JSON patch that puts the cloudtaser wrapper in front of
// every container, or deny with a reason (webhook.DenialReasons) and a message that says why
// and what to do. Pure apart from the entrypoint lookups it delegates to an
// EntrypointResolver; the HTTPS server and the AdmissionReview envelope live in
// internal/webhook, which calls Mutate.
//
// The pod it produces (docs/injector.md, "What the webhook changes in a pod"):
//   - volume cloudtaser-bin: emptyDir {medium: Memory, sizeLimit}
//   - volume cloudtaser-token: projected serviceAccountToken {audience, expirationSeconds 3600,
//     or JWTTokenExpiration in jwt mode}
//   - init container cloudtaser-init first: `/cloudtaser-runtime install /cloudtaser/bin`
//     from the runtime image, restricted security context, small resources
//   - every container, and every init container of the pod's own (native sidecars too):
//     command = wrapper + original command, the two mounts, the wrapper env
//   - annotation cloudtaser.io/injected: <runtime version>
//   - with cloudtaser.io/secret-files: the files injection of files.go
//   - $(VAR) references, exec probes and hooks, Windows: consumers.go
//
// Annotations are validated by internal/contract (the rule book shared with the Python CLI);
// nothing here re-implements a rule. Messages never carry a secret value or token.
package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/registry"
	"cloudtaser/runtime/internal/webhook"
)

// Names of what the webhook adds (cloudtaser/contract.py carries the same names).
const (
	LabelInject        = contract.AnnotationInject // the pod label the webhook's objectSelector matches
	AnnotationInjected = "cloudtaser.io/injected"
	InitContainerName  = "cloudtaser-init"
	VolumeBin          = "cloudtaser-bin"
	VolumeToken        = "cloudtaser-token"
	// ServiceAccountDir is where Kubernetes mounts the pod's API token by default.
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	BinDir            = "/cloudtaser/bin"
	WrapperPath       = BinDir + "/cloudtaser-runtime"
	RuntimeBinary     = "/cloudtaser-runtime" // in the runtime image
	TokenDir          = "/var/run/secrets/cloudtaser"
	TokenFile         = "token"
	TokenPath         = TokenDir + "/" + TokenFile
	TokenExpiration   = 3600
	DefaultEmptyDir   = "32Mi"
	InitUser          = 65532
)

// EntrypointResolver reads an image's ENTRYPOINT and CMD (registry.Resolver implements it).
type EntrypointResolver interface {
	Resolve(ctx context.Context, req registry.Request) (registry.Result, error)
}

// Stats are the registry counters exposed on /metrics.
type Stats = registry.Stats

// Config is the injector's configuration, from the `inject` flags. Call Validate once
// before serving (Mutate calls it too, and refuses every pod with reason internal if it fails).
type Config struct {
	RuntimeImage     string   // image of the init container
	AllowedAddresses []string // vault addresses pods may use (at least one)
	Audience         string   // audience of the projected token
	EmptyDirSize     string   // sizeLimit of cloudtaser-bin; "" = 32Mi
	Version          string   // value of cloudtaser.io/injected; "" = "dev"
	// Defaults stand in for a pod's absent vault-address, vault-auth-path, vault-auth-method
	// and vault-namespace annotations (defaults.go).
	Defaults contract.Defaults
	// JWTTokenExpiration: expirationSeconds of the projected token in jwt mode; 0 = 600.
	JWTTokenExpiration int64
	// Resolver looks up images of containers without command. nil: such containers are
	// refused (image-unresolvable) with the advice to set command or pin entrypoints.
	Resolver EntrypointResolver

	once    sync.Once
	err     error
	allowed map[string]bool
}

var quantityRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$`)

// Validate checks and normalises the configuration; the error names the flag.
func (c *Config) Validate() error {
	c.once.Do(func() { c.err = c.validate() })
	return c.err
}

func (c *Config) validate() error {
	if c.RuntimeImage == "" || strings.ContainsFunc(c.RuntimeImage, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return errors.New("--runtime-image must be an image reference without blanks")
	}
	if len(c.AllowedAddresses) == 0 {
		return errors.New("--allowed-vault-address is required (at least one): pods may only send their token to these vault addresses")
	}
	c.allowed = map[string]bool{}
	for _, a := range c.AllowedAddresses {
		v, err := contract.ValidateAddress("--allowed-vault-address", a)
		if err != nil {
			return err
		}
		c.allowed[canonAddress(v)] = true
	}
	if err := c.validateDefaults(); err != nil {
		return err
	}
	if !contract.ValidAudience(c.Audience) {
		return errors.New("--audience is required: the audience of the projected ServiceAccount token, as source apply-plan --audience gave the vault roles (letters, digits, '.', '_', ':', '/', '@', '+', '=', '-')")
	}
	if c.EmptyDirSize == "" {
		c.EmptyDirSize = DefaultEmptyDir
	}
	if !quantityRE.MatchString(c.EmptyDirSize) {
		return fmt.Errorf("--emptydir-size %q is not a Kubernetes quantity such as 32Mi", clip(c.EmptyDirSize, 40))
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	return nil
}

// Stats returns the resolver's counters (zero when the resolver keeps none).
func (c *Config) Stats() Stats {
	if s, ok := c.Resolver.(interface{ Stats() registry.Stats }); ok {
		return s.Stats()
	}
	return Stats{}
}

// canonAddress is the form two vault addresses are compared in: scheme and host in lower
// case, the scheme's default port made explicit, no trailing slash. Its input has passed
// contract.ValidateAddress.
func canonAddress(a string) string {
	u, err := url.Parse(a)
	if err != nil {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	return scheme + "://" + net.JoinHostPort(host, port) + strings.TrimRight(u.EscapedPath(), "/")
}

// AddressAllowed reports whether a (validated) vault address is one the configuration allows.
func (c *Config) AddressAllowed(addr string) bool {
	if c.Validate() != nil {
		return false
	}
	return c.allowed[canonAddress(addr)]
}

// deny is a refusal with the message "cloudtaser: <why>. <todo>".
func deny(reason, why, todo string) webhook.Decision {
	return webhook.Deny(reason, "cloudtaser: "+why+". "+todo)
}

// Mutate answers one admission request. A pod without the cloudtaser.io/inject=true label is
// allowed unchanged; an opted-in pod is mutated, or refused (fail closed) when it cannot be
// protected. A pod already injected (init container cloudtaser-init present) gets no patch.
// Dry-run requests are answered exactly like real ones (the webhook has no side effects).
func Mutate(ctx context.Context, cfg *Config, req *webhook.Request) webhook.Decision {
	if req == nil {
		return deny(webhook.ReasonBadRequest, "the AdmissionReview has no request", "Call /mutate only from the API server")
	}
	if cfg == nil || cfg.Validate() != nil {
		return deny(webhook.ReasonInternal, "the injector's configuration is invalid", "Fix the flags of the cloudtaser-injector Deployment (its log names the flag)")
	}
	if req.Kind.Kind != "Pod" || req.Kind.Group != "" || (req.SubResource != "") {
		return deny(webhook.ReasonBadRequest, fmt.Sprintf("the request is for %s, not a pod", clip(req.Kind.Kind+" "+req.SubResource, 60)),
			"Limit the MutatingWebhookConfiguration's rules to pods CREATE (cloudtaser target install does)")
	}
	if req.Operation != webhook.OperationCreate {
		return webhook.Allow(nil) // only creation is mutated; nothing to do on other operations
	}
	var p pod
	if len(req.Object) == 0 || json.Unmarshal(req.Object, &p) != nil || p.Spec == nil {
		return deny(webhook.ReasonBadRequest, "the request's object is not a readable pod", "Call /mutate only from the API server")
	}
	m := &mutation{cfg: cfg, req: req, pod: &p, who: podName(req, &p)}
	return m.run(ctx)
}

func podName(req *webhook.Request, p *pod) string {
	ns := req.Namespace
	if ns == "" {
		ns = p.Metadata.Namespace
	}
	n := p.Metadata.Name
	if n == "" {
		n = req.Name
	}
	if n == "" && p.Metadata.GenerateName != "" {
		n = p.Metadata.GenerateName + "*"
	}
	return clip(ns+"/"+n, 200)
}

type mutation struct {
	cfg      *Config
	req      *webhook.Request
	pod      *pod
	who      string
	ops      []patchOp
	accepted []string // cloudtaser.io/accept-dangerous-env
	method   string   // the pod's auth method (annotation or default)
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func (m *mutation) deny(reason, why, todo string) webhook.Decision {
	return deny(reason, "pod "+m.who+": "+why, todo)
}

// refusal is deny for the checks that return nil when they find nothing to refuse.
func (m *mutation) refusal(reason, why, todo string) *webhook.Decision {
	d := m.deny(reason, why, todo)
	return &d
}

func (m *mutation) run(ctx context.Context) webhook.Decision {
	labelValue, labelled := m.pod.Metadata.Labels[LabelInject]
	if !labelled {
		return webhook.Allow(nil)
	}
	opted, err := contract.ParseBool("label "+LabelInject, labelValue)
	if err != nil {
		return m.deny(webhook.ReasonBadAnnotations, err.Error(), `Set the label to "true" or remove it`)
	}
	if !opted {
		return webhook.Allow(nil)
	}
	// The label opts in; the annotations must agree and are read by the shared contract.
	ann := make(map[string]string, len(m.pod.Metadata.Annotations)+1)
	for k, v := range m.pod.Metadata.Annotations {
		ann[k] = v
	}
	if v, ok := ann[contract.AnnotationInject]; ok {
		yes, err := contract.ParseBool(contract.AnnotationInject, v)
		if err != nil {
			return m.deny(webhook.ReasonBadAnnotations, err.Error(), "Fix the pod template's annotations (cloudtaser target protect writes them)")
		}
		if !yes {
			return m.deny(webhook.ReasonBadAnnotations, "the label "+LabelInject+" asks for injection but the annotation "+contract.AnnotationInject+" says not",
				"Remove the label, or set the annotation to \"true\"")
		}
	}
	ann[contract.AnnotationInject] = "true"
	a, err := contract.ParseAnnotationsWith(ann, m.cfg.Defaults)
	if err != nil {
		return m.deny(webhook.ReasonBadAnnotations, err.Error(), "Fix the pod template's cloudtaser.io/* annotations (cloudtaser target protect writes them)")
	}
	if !m.cfg.AddressAllowed(a.Address) {
		return m.deny(webhook.ReasonAddressNotAllowed, "its "+contract.AnnotationVaultAddress+" is not one of the vault addresses this injector allows (its ServiceAccount token would be sent there)",
			"Use an address given to cloudtaser target install --allowed-vault-address, or add it there")
	}
	accepted, err := contract.ParseAcceptDangerous(contract.AnnotationAcceptDangerousEnv, ann[contract.AnnotationAcceptDangerousEnv])
	if err != nil {
		return m.deny(webhook.ReasonBadAnnotations, err.Error(), "Fix the pod template's cloudtaser.io/* annotations (cloudtaser target protect writes them)")
	}
	if err := contract.CheckTargets(contract.AnnotationEnvMap, a.Secrets, accepted); err != nil {
		return m.deny(webhook.ReasonDangerousEnv, err.Error(),
			"Map the field to another variable, or have the plan's reviewers accept it (acceptedDangerousEnv; protect writes "+contract.AnnotationAcceptDangerousEnv+")")
	}
	if refused := m.hostAliases(a.Address); refused != nil {
		return *refused
	}
	m.accepted = accepted
	m.method = a.AuthMethod
	spec := m.pod.Spec
	for _, c := range spec.InitContainers {
		if c.Name == InitContainerName {
			if refused := m.ownedTwice(); refused != nil {
				return *refused
			}
			return webhook.Allow(nil) // already injected (reinvocation): nothing to add
		}
	}
	if len(spec.Containers) == 0 {
		return m.deny(webhook.ReasonBadRequest, "the pod has no containers", "Call /mutate only from the API server")
	}
	if refused := m.conflicts(); refused != nil {
		return *refused
	}
	files, refused := m.secretFiles(a) // files.go
	if refused != nil {
		return *refused
	}
	cons, refused := m.consumers(a) // consumers.go: Windows, $(VAR), exec probes and hooks
	if refused != nil {
		return *refused
	}
	cmds, refused := m.commands(ctx, spec.Containers)
	if refused != nil {
		return *refused
	}
	initCmds, refused := m.commands(ctx, spec.InitContainers)
	if refused != nil {
		return *refused
	}
	m.addVolumes()
	m.addInitContainer()
	env := wrapperEnv(a, m.accepted)
	files.addTo(m, env)
	for i, c := range spec.Containers {
		base := fmt.Sprintf("/spec/containers/%d", i)
		m.wrapContainer(base, c, cons.main[i].wrapped(cmds[i], cmds[i].setArgs), cmds[i], files.containerEnv(i, env))
		cons.main[i].patch(m, base, cons.pod.Spec.Containers[i], cmds[i].setArgs)
		files.addOwnerMounts(m, i)
	}
	// The pod's own init containers, after cloudtaser-init (and cloudtaser-files): wrapped
	// like containers (their binary comes from cloudtaser-init, which runs first).
	offset := 1
	if files != nil {
		offset = 2
	}
	for k, c := range spec.InitContainers {
		base := fmt.Sprintf("/spec/initContainers/%d", k+offset)
		m.wrapContainer(base, c, cons.init[k].wrapped(initCmds[k], initCmds[k].setArgs), initCmds[k], files.containerEnv(-1, env))
		cons.init[k].patch(m, base, cons.pod.Spec.InitContainers[k], initCmds[k].setArgs)
	}
	m.addAnnotation()
	patch, err := json.Marshal(m.ops)
	if err != nil {
		return m.deny(webhook.ReasonInternal, "the patch could not be encoded", "Report this as a bug")
	}
	return webhook.Allow(patch)
}

// hostAliases refuses a pod whose spec.hostAliases names the vault address's host: the
// kubelet writes them into the container's /etc/hosts, so they would send the wrapper's
// login (and the ServiceAccount token in it) to another address than the one allowed.
func (m *mutation) hostAliases(addr string) *webhook.Decision {
	u, err := url.Parse(addr)
	if err != nil {
		return nil
	}
	host := canonHost(u.Hostname())
	for _, ha := range m.pod.Spec.HostAliases {
		for _, h := range ha.Hostnames {
			if canonHost(h) == host {
				return m.refusal(webhook.ReasonVaultSteering, fmt.Sprintf("its spec.hostAliases maps %s, the host of its %s, to another address (the wrapper's login would go there)",
					clip(h, 100), contract.AnnotationVaultAddress),
					"Remove that host alias: the vault's name must resolve through the cluster's DNS")
			}
		}
	}
	return nil
}

// ownedTwice refuses, on reinvocation, a container in which a variable the injector owns
// appears more than once: a later webhook appended its own value, which Kubernetes would
// apply instead of ours (the last entry of a name wins).
func (m *mutation) ownedTwice() *webhook.Decision {
	for _, c := range m.wrappable() {
		seen := map[string]bool{}
		for _, e := range c.Env {
			if contract.PodSettable(e.Name) {
				continue
			}
			if seen[e.Name] {
				return m.refusal(webhook.ReasonEnvConflict, fmt.Sprintf("container %s sets %s a second time after the injector did (another webhook?)", clip(c.Name, 63), clip(e.Name, 80)),
					"Keep other webhooks from setting CLOUDTASER_* variables: only the injector sets them")
			}
			seen[e.Name] = true
		}
	}
	return nil
}

// wrappable are the containers the injector wraps: the pod's init containers (not its own)
// and its containers.
func (m *mutation) wrappable() []container {
	out := make([]container, 0, len(m.pod.Spec.InitContainers)+len(m.pod.Spec.Containers))
	for _, c := range m.pod.Spec.InitContainers {
		if c.Name != InitContainerName && c.Name != FilesContainerName {
			out = append(out, c)
		}
	}
	return append(out, m.pod.Spec.Containers...)
}

// canonHost: host names compare case-insensitively and without a trailing dot.
func canonHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// conflicts refuses a pod that already uses a name or path the injection adds.
func (m *mutation) conflicts() *webhook.Decision {
	todo := "Rename or remove it: the injector adds it itself"
	for _, v := range m.pod.Spec.Volumes {
		if v.Name == VolumeBin || v.Name == VolumeToken {
			return m.refusal(webhook.ReasonEnvConflict, fmt.Sprintf("it already has a volume named %s", v.Name), todo)
		}
	}
	for _, c := range m.wrappable() {
		cn := clip(c.Name, 63)
		for _, e := range c.Env {
			if !contract.PodSettable(e.Name) {
				return m.refusal(webhook.ReasonEnvConflict, fmt.Sprintf("container %s sets %s, a variable of the cloudtaser runtime that only the injector sets", cn, clip(e.Name, 80)),
					"Remove that variable from the container (the cloudtaser.io/* annotations carry the setting; a pod may set only "+strings.Join(contract.TuningEnv, ", ")+")")
			}
		}
		for _, vm := range c.VolumeMounts {
			p := strings.TrimRight(vm.MountPath, "/")
			if p == BinDir || p == TokenDir || strings.HasPrefix(p, BinDir+"/") || strings.HasPrefix(p, TokenDir+"/") {
				return m.refusal(webhook.ReasonEnvConflict, fmt.Sprintf("container %s mounts a volume at %s, where the injector mounts its own", cn, clip(vm.MountPath, 100)), todo)
			}
		}
	}
	return nil
}

// command is the wrapped command of one container and, when the image's CMD becomes the
// args, those args.
type command struct {
	cmd     []string
	args    []string
	setArgs bool
}

// commands computes every container's command, looking up the images of those without one
// (concurrently; the resolver de-duplicates identical images).
func (m *mutation) commands(ctx context.Context, cs []container) ([]command, *webhook.Decision) {
	ctx, cancel := lookupContext(ctx)
	defer cancel()
	out := make([]command, len(cs))
	errs := make([]*webhook.Decision, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		if len(c.Command) > 0 {
			out[i] = command{cmd: append(wrapperPrefix(), c.Command...)}
			continue
		}
		if m.cfg.Resolver == nil {
			return nil, m.refusal(webhook.ReasonImageUnresolvable, fmt.Sprintf("container %s has no command and this injector does not read images from registries", clip(c.Name, 63)),
				"Set command in the pod template, or run cloudtaser target protect --pin-entrypoints")
		}
		wg.Add(1)
		go func(i int, c container) {
			defer wg.Done()
			out[i], errs[i] = m.lookup(ctx, c)
		}(i, c)
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return nil, e
		}
	}
	return out, nil
}

// LookupMargin is kept free of registry lookups at the end of the request's deadline, so
// that a refusal with its message reaches the API server before it gives up on the webhook.
const LookupMargin = 500 * time.Millisecond

// lookupContext ends the lookups LookupMargin (at most a fifth of the time left) before ctx's
// deadline.
func lookupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(LookupMargin, time.Until(deadline)/5)
	return context.WithDeadline(ctx, deadline.Add(-margin))
}

func (m *mutation) lookup(ctx context.Context, c container) (command, *webhook.Decision) {
	cn := clip(c.Name, 63)
	todo := "Set command in the pod template, or run cloudtaser target protect --pin-entrypoints (or give the injector a --mirror / --read-pull-secrets)"
	if c.Image == "" {
		return command{}, m.refusal(webhook.ReasonImageUnresolvable, fmt.Sprintf("container %s has neither command nor image", cn), "Set the container's image")
	}
	req := registry.Request{Image: c.Image, Namespace: m.req.Namespace, Platform: m.platform()}
	if req.Namespace == "" {
		req.Namespace = m.pod.Metadata.Namespace
	}
	for _, s := range m.pod.Spec.ImagePullSecrets {
		req.PullSecrets = append(req.PullSecrets, s.Name)
	}
	res, err := m.cfg.Resolver.Resolve(ctx, req)
	if err != nil {
		var re *registry.Error
		why := "its image could not be looked up"
		if errors.As(err, &re) {
			why = re.Msg
		}
		return command{}, m.refusal(webhook.ReasonImageUnresolvable, fmt.Sprintf("container %s has no command and %s", cn, why), todo)
	}
	if len(res.Entrypoint) == 0 && len(res.Cmd) == 0 && len(c.Args) == 0 {
		return command{}, m.refusal(webhook.ReasonImageUnresolvable, fmt.Sprintf("container %s has no command and its image defines neither ENTRYPOINT nor CMD", cn),
			"Set command in the pod template")
	}
	// What comes from the image is not subject to Kubernetes' $(VAR) expansion; once in the
	// pod spec it would be, so every $ is doubled.
	out := command{cmd: append(wrapperPrefix(), escapeAll(res.Entrypoint)...)}
	if len(c.Args) == 0 && len(res.Cmd) > 0 {
		out.args, out.setArgs = escapeAll(res.Cmd), true
	}
	return out, nil
}

// platform: the node's os/arch as far as the pod pins it (nodeSelector kubernetes.io/os and
// kubernetes.io/arch, else a required node affinity that allows exactly one value); the
// resolver fills in linux/amd64 for what is left open.
func (m *mutation) platform() registry.Platform {
	ns := m.pod.Spec.NodeSelector
	p := registry.Platform{OS: ns["kubernetes.io/os"], Architecture: ns["kubernetes.io/arch"]}
	if p.OS == "" {
		p.OS = m.affinityValue("kubernetes.io/os")
	}
	if p.Architecture == "" {
		p.Architecture = m.affinityValue("kubernetes.io/arch")
	}
	return p
}

// affinityValue is the one value a required node affinity allows for key: every term
// (terms are ORed) must pin the key with In to the same single value; "" otherwise.
func (m *mutation) affinityValue(key string) string {
	a := m.pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.Required == nil || len(a.NodeAffinity.Required.Terms) == 0 {
		return ""
	}
	value := ""
	for _, term := range a.NodeAffinity.Required.Terms {
		found := ""
		for _, e := range term.MatchExpressions {
			if e.Key == key && e.Operator == "In" && len(e.Values) == 1 {
				found = e.Values[0]
			}
		}
		if found == "" || (value != "" && found != value) {
			return ""
		}
		value = found
	}
	return value
}

func wrapperPrefix() []string { return []string{WrapperPath, "wrap", "--"} }

func escapeAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ReplaceAll(s, "$", "$$")
	}
	return out
}

// envVar is a container env entry.
type envVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// wrapperEnv is the wrapper's environment for the parsed annotations, in the wrapper's own
// syntax (contract.ResolveEnv reads it back to the same configuration): every variable of
// contract.OwnedEnv, in that order, empty where the wrapper's default applies. Written after
// the container's own entries (which never hold one of them: conflicts), so neither envFrom nor
// the image's ENV can supply one.
func wrapperEnv(a contract.Annotations, accepted []string) []envVar {
	paths := make([]string, len(a.Secrets))
	groups := make([]string, len(a.Secrets))
	for i, s := range a.Secrets {
		paths[i] = s.Path
		pairs := make([]string, len(s.Fields))
		for j, f := range s.Fields {
			pairs[j] = f.Field + "=" + f.Env
		}
		groups[i] = strings.Join(pairs, ",")
	}
	values := map[string]string{
		contract.EnvAddr:          a.Address,
		contract.EnvAuthMethod:    a.AuthMethod,
		contract.EnvAuthRole:      a.Role,
		contract.EnvAuthMountPath: "auth/" + a.AuthMount,
		contract.EnvSecretPaths:   strings.Join(paths, ","),
		contract.EnvEnvMap:        strings.Join(groups, ";"),
		contract.EnvSATokenPath:   TokenPath,
		contract.EnvAcceptDanger:  strings.Join(accepted, ","),
		contract.EnvNamespace:     a.Namespace,
	}
	env := make([]envVar, len(contract.OwnedEnv))
	for i, name := range contract.OwnedEnv {
		env[i] = envVar{name, strings.ReplaceAll(values[name], "$", "$$")}
	}
	return env
}

func (m *mutation) add(path string, v any) {
	m.ops = append(m.ops, patchOp{Op: "add", Path: path, Value: v})
}

// addList adds items to the list at path: the whole list when the pod has none, else each
// item at the end (or at the front when first).
func (m *mutation) addList(path string, have int, first bool, items ...any) {
	if have == 0 {
		m.add(path, items)
		return
	}
	for i, it := range items {
		if first {
			m.add(fmt.Sprintf("%s/%d", path, i), it)
		} else {
			m.add(path+"/-", it)
		}
	}
}

func (m *mutation) addVolumes() {
	bin := map[string]any{"name": VolumeBin, "emptyDir": map[string]any{"medium": "Memory", "sizeLimit": m.cfg.EmptyDirSize}}
	tok := map[string]any{"name": VolumeToken, "projected": map[string]any{"sources": []any{
		map[string]any{"serviceAccountToken": map[string]any{"audience": m.cfg.Audience, "expirationSeconds": m.cfg.tokenExpiration(m.method), "path": TokenFile}},
	}}}
	m.addList("/spec/volumes", len(m.pod.Spec.Volumes), false, bin, tok)
}

// InitContainer is the init container the webhook inserts first.
func (c *Config) InitContainer() map[string]any {
	return map[string]any{
		"name":    InitContainerName,
		"image":   c.RuntimeImage,
		"command": []string{RuntimeBinary, "install", BinDir},
		"volumeMounts": []any{
			map[string]any{"name": VolumeBin, "mountPath": BinDir},
			// A mount at the ServiceAccount token path keeps the ServiceAccount admission
			// plugin from mounting the pod's API token into this container: the init
			// container never needs it, and without this the plugin (re-run after our patch)
			// changes the pod again, so the API server calls the webhook a second time for
			// every pod (reinvocationPolicy IfNeeded). What it shows is the binary: no secret.
			map[string]any{"name": VolumeBin, "mountPath": ServiceAccountDir, "readOnly": true},
		},
		"securityContext": map[string]any{
			"runAsNonRoot":             true,
			"runAsUser":                InitUser,
			"allowPrivilegeEscalation": false,
			"capabilities":             map[string]any{"drop": []string{"ALL"}},
			"seccompProfile":           map[string]any{"type": "RuntimeDefault"},
			"readOnlyRootFilesystem":   true,
		},
		"resources": map[string]any{
			"requests": map[string]any{"cpu": "10m", "memory": "16Mi"},
			"limits":   map[string]any{"memory": "32Mi"},
		},
	}
}

func (m *mutation) addInitContainer() {
	m.addList("/spec/initContainers", len(m.pod.Spec.InitContainers), true, m.cfg.InitContainer())
}

func (m *mutation) wrapContainer(base string, c container, wrapped []string, cmd command, env []envVar) {
	m.add(base+"/command", wrapped)
	if cmd.setArgs {
		m.add(base+"/args", cmd.args)
	}
	mounts := []any{
		map[string]any{"name": VolumeBin, "mountPath": BinDir, "readOnly": true},
		map[string]any{"name": VolumeToken, "mountPath": TokenDir, "readOnly": true},
	}
	m.addList(base+"/volumeMounts", len(c.VolumeMounts), false, mounts...)
	items := make([]any, len(env))
	for j := range env {
		items[j] = env[j]
	}
	m.addList(base+"/env", len(c.Env), false, items...)
}

func (m *mutation) addAnnotation() {
	if m.pod.Metadata.Annotations == nil {
		m.add("/metadata/annotations", map[string]string{AnnotationInjected: m.cfg.Version})
		return
	}
	m.add("/metadata/annotations/"+pointerEscape(AnnotationInjected), m.cfg.Version)
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// clip shows untrusted input in a message: at most n runes, control characters replaced.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		s = string(r[:n]) + "…"
	}
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return '?'
		}
		return c
	}, s)
}
