package webhook

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sort"
	"strings"
	"time"

	"cloudtaser/runtime/internal/contract"
)

// caOrganization marks the CAs this injector publishes: Subject O=cloudtaser-injector,
// OU=<namespace>, CN=<pod name>. That subject is how a replica recognises the CAs of the
// other replicas in the shared caBundle, and which pod to check before pruning one.
const caOrganization = "cloudtaser-injector"

// clockSkew backdates NotBefore so an API server whose clock is a little behind accepts a
// fresh certificate.
const clockSkew = time.Minute

// Identity names the replica (pod) that owns a CA.
type Identity struct{ Namespace, Pod string }

func (id Identity) String() string { return id.Namespace + "/" + id.Pod }

// identityOf returns the owner named by an injector CA's subject, ok false for any other
// certificate.
func identityOf(c *x509.Certificate) (Identity, bool) {
	s := c.Subject
	if len(s.Organization) != 1 || s.Organization[0] != caOrganization || len(s.OrganizationalUnit) != 1 || s.CommonName == "" {
		return Identity{}, false
	}
	return Identity{Namespace: s.OrganizationalUnit[0], Pod: s.CommonName}, true
}

// servingCert is one generation: an in-memory CA (its key is discarded once the leaf is
// signed) and the leaf that the server presents.
type servingCert struct {
	tls      *tls.Certificate
	ca       *x509.Certificate
	rotateAt time.Time
}

// ParseSANs splits --san values into DNS names and IP addresses; each must be a valid
// DNS host name (contract.HostName in any letter case, optionally a leading "*.") or an IP literal.
func ParseSANs(values []string) (dns []string, ips []net.IP, err error) {
	if len(values) == 0 {
		return nil, nil, errors.New("at least one --san is required (the Service DNS name, e.g. cloudtaser-injector.cloudtaser-system.svc, or 127.0.0.1 for a URL webhook)")
	}
	for _, v := range values {
		if ip := net.ParseIP(v); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !validDNSName(v) {
			return nil, nil, fmt.Errorf("--san %q is neither an IP address nor a DNS name", v)
		}
		dns = append(dns, strings.ToLower(v))
	}
	return dns, ips, nil
}

// validDNSName: a host name in any letter case, optionally a wildcard "*." in front.
func validDNSName(s string) bool {
	lower := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, strings.TrimPrefix(s, "*."))
	return contract.HostName(lower)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// newServingCert makes a CA (ECDSA P-256) naming id, and a serving leaf for the SANs signed
// by it, both valid from now-clockSkew to now+validity. It is due for rotation at 2/3 of
// the validity. Nothing is written anywhere; the CA's private key is dropped on return.
func newServingCert(id Identity, dns []string, ips []net.IP, validity time.Duration, now time.Time) (*servingCert, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := now.Add(-clockSkew), now.Add(validity)
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{caOrganization}, OrganizationalUnit: []string{id.Namespace}, CommonName: id.Pod},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err = serial()
	if err != nil {
		return nil, err
	}
	cn := "cloudtaser-injector"
	if len(dns) > 0 {
		cn = dns[0]
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{Organization: []string{caOrganization}, CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, err
	}
	return &servingCert{
		tls:      &tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey, Leaf: leaf},
		ca:       ca,
		rotateAt: now.Add(validity * 2 / 3),
	}, nil
}

// parseBundle reads the certificates of a PEM bundle; blocks that are not certificates or
// do not parse are skipped (they are dropped at the next write).
func parseBundle(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func encodeBundle(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// mergeBundle computes the caBundle a replica writes. Kept:
//   - own: this replica's CAs (current, and during a rotation the next and the retired one);
//   - every other injector CA from existing that is unexpired and names a live pod of this
//     namespace (alive), or names another namespace (cannot be checked: kept until expiry).
//
// The result is in one canonical order (NotBefore, then the DER bytes), whichever replica
// computes it, so two replicas agreeing on the content never rewrite each other's bundle.
//
// Dropped: expired CAs, CAs of pods that are gone, CAs naming this replica that it no longer
// holds (a previous process of the same pod, or its own retired CA), duplicates, and any
// certificate that is not an injector CA (the injector owns the field).
func mergeBundle(existing, own []*x509.Certificate, self Identity, alive func(pod string) bool, now time.Time) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(own)+len(existing))
	seen := map[string]bool{}
	for _, c := range own {
		if !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			out = append(out, c)
		}
	}
	for _, c := range existing {
		if seen[string(c.Raw)] || now.After(c.NotAfter) {
			continue
		}
		id, ok := identityOf(c)
		if !ok || id == self {
			continue
		}
		if id.Namespace == self.Namespace && !alive(id.Pod) {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return bytes.Compare(out[i].Raw, out[j].Raw) < 0
	})
	return out
}
