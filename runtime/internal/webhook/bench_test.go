package webhook

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkMutateRoundTrip: one /mutate request over a kept-alive TLS connection with a
// mutator that answers at once (the server's own cost: TLS, HTTP, envelope, metrics).
func BenchmarkMutateRoundTrip(b *testing.B) {
	ts := startServer(b, canaryMutator)
	body := reviewBody("u", "ok")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := ts.client.Post(ts.url+"/mutate?timeout=10s", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
