package main

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var goodEnv = map[string]string{"POD_NAME": "cloudtaser-injector-7d9f-abcde", "POD_NAMESPACE": "cloudtaser-system",
	"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}

var goodArgs = []string{"--runtime-image", "reg/cloudtaser-runtime:1", "--allowed-vault-address", "https://vault:8200",
	"--audience", "vault", "--san", "cloudtaser-injector.cloudtaser-system.svc"}

func TestInjectFlagsAreParsed(t *testing.T) {
	args := append(append([]string{}, goodArgs...), "--listen", "127.0.0.1:9443", "--mirror", "docker.io=registry.corp:5000",
		"--san", "127.0.0.1", "--reuse-port", "--cert-validity", "30s", "--tag-ttl", "1m")
	f, err := parseInjectFlags(args, envOf(goodEnv), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if f.listen != "127.0.0.1:9443" || !f.reusePort || f.certValidityd.Seconds() != 30 || f.mirrorMap["docker.io"] != "registry.corp:5000" ||
		len(f.dnsSANs) != 1 || len(f.ipSANs) != 1 || f.configuration != "cloudtaser-injector" || f.webhookName != "inject.cloudtaser.io" ||
		f.podName != goodEnv["POD_NAME"] {
		t.Errorf("parsed wrong: %+v", f)
	}
}

func TestBadInjectFlagsGiveOneClearMessage(t *testing.T) {
	cases := []struct {
		extra []string
		env   map[string]string
		want  string
	}{
		{[]string{"--listen", "8443"}, nil, "--listen"},
		{[]string{"--listen", ":99999"}, nil, "--listen"},
		{[]string{"--cert-validity", "10s"}, nil, "--cert-validity"},
		{[]string{"--cert-validity", "forever"}, nil, "--cert-validity"},
		{[]string{"--tag-ttl", "-1s"}, nil, "--tag-ttl"},
		{[]string{"--mirror", "docker.io"}, nil, "--mirror"},
		{[]string{"--mirror", "a.io=b.io", "--mirror", "a.io=c.io"}, nil, "given twice"},
		{[]string{"--webhook-configuration", "Bad_Name"}, nil, "--webhook-configuration"},
		{[]string{"--webhook-name", "inject"}, nil, "--webhook-name"},
		{[]string{"--san", "not a name"}, nil, "--san"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{[]string{"--nope"}, nil, "inject -h"},
		{nil, map[string]string{"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"}, "POD_NAME"},
		{nil, map[string]string{"POD_NAME": "a", "POD_NAMESPACE": "b"}, "KUBERNETES_SERVICE_HOST"},
	}
	for _, c := range cases {
		env := c.env
		if env == nil {
			env = goodEnv
		}
		var stderr bytes.Buffer
		code := injectMain(append(append([]string{}, goodArgs...), c.extra...), envOf(env), &stderr)
		if code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q (want 2 and %q)", c.extra, code, stderr.String(), c.want)
		}
		if strings.Count(stderr.String(), "\n") > 2 || strings.Contains(stderr.String(), "goroutine") {
			t.Errorf("%v: not one clear message: %q", c.extra, stderr.String())
		}
	}
	// inject's own rules (inject.Config.Validate) run before anything touches the network.
	for flagName, args := range map[string][]string{
		"--allowed-vault-address": {"--runtime-image", "x", "--audience", "v", "--san", "127.0.0.1"},
		"--audience":              {"--runtime-image", "x", "--allowed-vault-address", "https://v:8200", "--san", "127.0.0.1"},
		"--runtime-image":         {"--audience", "v", "--allowed-vault-address", "https://v:8200", "--san", "127.0.0.1"},
	} {
		var stderr bytes.Buffer
		if code := injectMain(args, envOf(goodEnv), &stderr); code != 2 || !strings.Contains(stderr.String(), flagName) {
			t.Errorf("missing %s: exit %d, %q", flagName, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := injectMain([]string{"-h"}, envOf(goodEnv), &stderr); code != 0 || !strings.Contains(stderr.String(), "--runtime-image") && !strings.Contains(stderr.String(), "-runtime-image") {
		t.Errorf("-h: exit %d", code)
	}
}

func TestInjectExitsFourWhenThePortIsTaken(t *testing.T) {
	dir := t.TempDir()
	issue(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "some-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, dir, "ca")
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("not-a-real-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	env := map[string]string{"POD_NAME": "p", "POD_NAMESPACE": "ns", "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
	args := append(append([]string{}, goodArgs...), "--listen", taken.Addr().String(),
		"--kube-token-file", tok, "--kube-ca-file", filepath.Join(dir, "ca.crt"))
	var stderr bytes.Buffer
	if code := injectMain(args, envOf(env), &stderr); code != exitFailed || !strings.Contains(stderr.String(), "cannot listen on") {
		t.Errorf("port taken: exit %d\n%s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "not-a-real-token") {
		t.Error("the token reached stderr")
	}
}
