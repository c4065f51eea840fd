// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/byokd/byokd/crypto/secmem"
)

// maxAnswer bounds an answer read by exchange: a key action's answer is
// well under 2 KiB.
const maxAnswer = 64 << 10

// wireAnswer is one HTTP answer read into locked memory. body points into
// that memory; destroy wipes and unmaps it.
type wireAnswer struct {
	status int
	header http.Header // names canonical; never holds the body
	body   []byte
	mem    *secmem.Buffer
}

func (a *wireAnswer) destroy() { a.mem.Destroy() }

// exchange posts body to path on a connection of its own (HTTP/1.1,
// Connection: close) and reads the whole answer into locked memory. Nothing
// of the answer passes through a heap buffer of Go's HTTP stack: the bytes
// go from the socket (or from crypto/tls's record buffer, wiped before
// exchange returns) straight into the locked buffer.
func (c *Client) exchange(ctx context.Context, token, path string, body []byte) (*wireAnswer, error) {
	deadline := time.Now().Add(c.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req, err := c.request(token, path, body)
	if err != nil {
		return nil, err
	}
	raw, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	conn := raw
	var tconn *tls.Conn
	defer func() {
		conn.Close()
		if tconn != nil {
			if err := wipeTLSReadBuffers(tconn); err != nil {
				c.wipeWarning.Do(func() {
					c.cfg.Log.Error("crypto/tls's record buffer could not be wiped: the clear data key may stay in the heap until reused",
						"err", err)
				})
			}
		}
	}()
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if c.base.Scheme == "https" {
		cfg := c.tls.Clone()
		cfg.ServerName = c.base.Hostname()
		tconn = tls.Client(conn, cfg)
		if err := tconn.HandshakeContext(ctx); err != nil {
			return nil, &net.OpError{Op: "tls handshake", Net: "tcp", Err: err}
		}
		conn = tconn
	}
	if _, err := conn.Write(req); err != nil {
		return nil, &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	mem, err := secmem.New(maxAnswer)
	if err != nil {
		return nil, fmt.Errorf("locked memory for the answer: %w", err)
	}
	ans, err := readAnswer(conn, mem)
	if err != nil {
		mem.Destroy()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return ans, nil
}

// request renders the HTTP/1.1 request. Header values come from the config
// and the token source; a CR or LF in one is refused, never sent.
func (c *Client) request(token, path string, body []byte) ([]byte, error) {
	hdr := [][2]string{
		{"Host", c.base.Host},
		{"Authorization", "Bearer " + token},
		{"Bluemix-Instance", c.cfg.InstanceID},
		{"Correlation-Id", newCorrelationID()},
		{"Accept", "application/json"},
		{"Content-Type", "application/vnd.ibm.kms.key_action+json"},
		{"Content-Length", strconv.Itoa(len(body))},
		{"Connection", "close"},
		{"User-Agent", "byokd"},
	}
	if c.cfg.KeyRing != "" {
		hdr = append(hdr, [2]string{"X-Kms-Key-Ring", c.cfg.KeyRing})
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\n", path)
	for _, h := range hdr {
		if strings.ContainsAny(h[1], "\r\n") {
			return nil, fmt.Errorf("header %s holds a line break", h[0])
		}
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes(), nil
}

// dial connects to Key Protect's host, through the proxy the environment
// names for it (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) with CONNECT.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	target := hostPort(c.base)
	d := &net.Dialer{Timeout: c.cfg.Timeout}
	proxy, err := c.proxy(&http.Request{Method: http.MethodPost, URL: c.base, Header: http.Header{}})
	if err != nil {
		return nil, fmt.Errorf("proxy from environment: %w", err)
	}
	if proxy == nil {
		return d.DialContext(ctx, "tcp", target)
	}
	conn, err := d.DialContext(ctx, "tcp", hostPort(proxy))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := connect(conn, proxy, target); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// connect asks an HTTP proxy for a tunnel to target.
func connect(conn net.Conn, proxy *url.URL, target string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if u := proxy.User; u != nil {
		pass, _ := u.Password()
		fmt.Fprintf(&b, "Proxy-Authorization: Basic %s\r\n", base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)))
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return &net.OpError{Op: "proxy connect", Net: "tcp", Err: err}
	}
	// Read the proxy's answer a byte at a time, so that nothing after it
	// is taken from the tunnel.
	var head []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if len(head) > 8<<10 {
			return errors.New("proxy connect: answer too long")
		}
		if _, err := io.ReadFull(conn, one); err != nil {
			return &net.OpError{Op: "proxy connect", Net: "tcp", Err: err}
		}
		head = append(head, one[0])
	}
	line, _, _ := strings.Cut(string(head), "\r\n")
	if f := strings.Fields(line); len(f) < 2 || len(f[1]) != 3 || f[1][0] != '2' {
		return &net.OpError{Op: "proxy connect", Net: "tcp", Err: fmt.Errorf("proxy %s answered %q", proxy.Redacted(), clip(line, 80))}
	}
	return nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// readAnswer reads one HTTP/1.1 answer from conn into mem and parses it
// there. It stops at the end the framing gives (Content-Length, chunked)
// or at EOF.
func readAnswer(conn io.Reader, mem *secmem.Buffer) (*wireAnswer, error) {
	buf := mem.Bytes()
	n := 0
	headEnd := -1
	var ans *wireAnswer
	for {
		if n == len(buf) {
			return nil, fmt.Errorf("answer larger than %d bytes", len(buf))
		}
		m, err := conn.Read(buf[n:])
		n += m
		if headEnd < 0 {
			if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
				headEnd = i + 4
				if ans, err = parseHead(buf[:i]); err != nil {
					return nil, err
				}
				ans.mem = mem
			}
		}
		if headEnd >= 0 {
			body, done, ferr := frame(ans.header, buf[headEnd:n], err == io.EOF)
			if ferr != nil {
				return nil, ferr
			}
			if done {
				ans.body = body
				return ans, nil
			}
		}
		if err == io.EOF {
			return nil, errors.New("answer ends early")
		}
		if err != nil {
			return nil, &net.OpError{Op: "read", Net: "tcp", Err: err}
		}
	}
}

// parseHead parses the status line and the headers. Header values are
// copied out; they never hold key material.
func parseHead(head []byte) (*wireAnswer, error) {
	lines := bytes.Split(head, []byte("\r\n"))
	f := strings.Fields(string(lines[0]))
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return nil, errors.New("not an HTTP/1.x answer")
	}
	status, err := strconv.Atoi(f[1])
	if err != nil || status < 100 || status > 999 {
		return nil, errors.New("malformed status line")
	}
	h := http.Header{}
	for _, l := range lines[1:] {
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return nil, errors.New("malformed header line")
		}
		h.Add(textproto.CanonicalMIMEHeaderKey(string(bytes.TrimSpace(name))), string(bytes.TrimSpace(value)))
	}
	return &wireAnswer{status: status, header: h}, nil
}

// frame finds the body in b by the answer's framing: it reports done when
// the body is complete, decoding a chunked body in place.
func frame(h http.Header, b []byte, eof bool) (body []byte, done bool, err error) {
	if te := strings.ToLower(h.Get("Transfer-Encoding")); te != "" {
		if te != "chunked" {
			return nil, false, fmt.Errorf("unsupported transfer encoding %q", clip(te, 32))
		}
		return dechunk(b)
	}
	if cl := h.Get("Content-Length"); cl != "" {
		want, err := strconv.Atoi(cl)
		if err != nil || want < 0 {
			return nil, false, errors.New("malformed Content-Length")
		}
		if len(b) < want {
			return nil, false, nil
		}
		return b[:want], true, nil
	}
	return b, eof, nil
}

// dechunk decodes a chunked body in place once it is complete; until then
// it reports not done and leaves b as it is.
func dechunk(b []byte) ([]byte, bool, error) {
	type chunk struct{ from, to int }
	var chunks []chunk
	i := 0
	for {
		j := bytes.Index(b[i:], []byte("\r\n"))
		if j < 0 {
			return nil, false, nil
		}
		sizeText, _, _ := strings.Cut(string(b[i:i+j]), ";")
		size, err := strconv.ParseUint(strings.TrimSpace(sizeText), 16, 31)
		if err != nil {
			return nil, false, errors.New("malformed chunk size")
		}
		i += j + 2
		if size == 0 {
			// Trailers, if any, end with an empty line.
			if k := bytes.Index(b[i:], []byte("\r\n")); k < 0 {
				return nil, false, nil
			} else if k > 0 && !bytes.Contains(b[i:], []byte("\r\n\r\n")) {
				return nil, false, nil
			}
			break
		}
		if len(b)-i < int(size)+2 {
			return nil, false, nil
		}
		chunks = append(chunks, chunk{i, i + int(size)})
		i += int(size) + 2
	}
	out := 0
	for _, c := range chunks {
		out += copy(b[out:], b[c.from:c.to])
	}
	return b[:out], true, nil
}
