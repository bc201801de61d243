package wrap

import "os"

// ProcessEnvIgnored are the variables the Go standard library would read on the wrapper's
// behalf from its own environment, which is the app's: proxies (net/http; the vault client
// never uses a proxy anyway), the system trust store's locations (crypto/x509), TLS and X.509
// behaviour switches (GODEBUG), and resolver switches (net). None of them may steer the
// wrapper's connection to the vault (issue 28, finding 7).
var ProcessEnvIgnored = []string{
	"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
	"http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
	"GODEBUG",
	"LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES",
}

// IsolateProcessEnv removes ProcessEnvIgnored from this process's environment. Call it after
// the inherited environment was copied for the app (Wrapper.Environ) and before the first
// vault request: the app still gets every one of them, the wrapper reads none.
func IsolateProcessEnv() {
	for _, n := range ProcessEnvIgnored {
		_ = os.Unsetenv(n)
	}
}
