// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/kpemu"
)

const ctlUsage = `usage: kpemu ctl ACTION [ARG] [KEY]

Plays the customer against a Key Protect endpoint (the emulator or the real
service) with the real keyprotect-go-client. Reads KP_URL, KP_API_KEY,
KP_INSTANCE_ID and, when KEY is left out, KP_ROOT_KEY_ID from the
environment (make run writes them to .dev/kpemu.env). KP_TOKEN_URL
defaults to $KP_URL/identity/token.

Customer actions (any Key Protect endpoint):
  show | disable | enable | delete | restore | rotate | sync [KEY]
  rotation-policy MONTHS|off [KEY]  set the key's rotation policy (1 to 12
                                    months) or disable it
  create-root NAME                  create a root key and print its id

Emulator controls (kpemu's admin API under $KP_URL/_kpemu; only KP_URL and,
for a key, KP_ROOT_KEY_ID are read):
  refuse PRESET|off           answer Key Protect requests with a refusal:
                              network-policy | wrong-region | ipv6-policy |
                              hsm | proxy-407 | lb-403 | lb-404
  register CRN [KEY]          register a cloud resource against the key, as
                              an IBM service does
  register-retained CRN [KEY] the same, for a resource under a retention
                              policy (preventKeyDeletion)
  unregister CRN [KEY]        remove the registration
  advance DURATION            move the emulator's clock forward (31s, 720h)`

// ctlActions are the actions ctlUsage lists, with how many arguments come
// before the optional KEY.
var ctlActions = map[string]int{
	"show": 0, "disable": 0, "enable": 0, "delete": 0, "restore": 0, "rotate": 0, "sync": 0,
	"rotation-policy": 1, "create-root": 1,
	"refuse": 1, "register": 1, "register-retained": 1, "unregister": 1, "advance": 1,
}

// ctlAdmin are the actions that use kpemu's admin API instead of the client.
var ctlAdmin = map[string]bool{"refuse": true, "register": true, "register-retained": true, "unregister": true, "advance": true}

// ctl runs one customer action against Key Protect, or one emulator control.
func ctl(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(ctlUsage)
	}
	action := args[0]
	nargs, known := ctlActions[action]
	if !known || len(args) < 1+nargs {
		return errors.New(ctlUsage)
	}
	arg := ""
	if nargs == 1 {
		arg = args[1]
	}
	rest := args[1+nargs:]
	env := func(k string) (string, error) {
		v := os.Getenv(k)
		if v == "" {
			return "", fmt.Errorf("%s is not set (source .dev/kpemu.env)", k)
		}
		return v, nil
	}
	url, err := env("KP_URL")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Actions without a key.
	switch action {
	case "refuse":
		if len(rest) != 0 {
			return errors.New(ctlUsage)
		}
		return refuse(ctx, url, arg, stdout)
	case "advance":
		if len(rest) != 0 {
			return errors.New(ctlUsage)
		}
		if _, err := time.ParseDuration(arg); err != nil {
			return fmt.Errorf("advance %q: %w", arg, err)
		}
		var out struct {
			Now time.Time `json:"now"`
		}
		if err := admin(ctx, http.MethodPost, url+"/_kpemu/clock", map[string]string{"advance": arg}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "clock: %s\n", out.Now.Format(time.RFC3339))
		return nil
	}

	var key string
	switch len(rest) {
	case 0:
		if action != "create-root" {
			if key, err = env("KP_ROOT_KEY_ID"); err != nil {
				return err
			}
		}
	case 1:
		if action == "create-root" {
			return errors.New(ctlUsage)
		}
		key = rest[0]
	default:
		return errors.New(ctlUsage)
	}
	if ctlAdmin[action] {
		body := map[string]any{"keyId": key, "crn": arg}
		method := http.MethodPost
		switch action {
		case "register-retained":
			body["preventKeyDeletion"] = true
		case "unregister":
			method = http.MethodDelete
		}
		if err := admin(ctx, method, url+"/_kpemu/registrations", body, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s %s: ok\n", action, arg, key)
		return nil
	}

	apiKey, err := env("KP_API_KEY")
	if err != nil {
		return err
	}
	instance, err := env("KP_INSTANCE_ID")
	if err != nil {
		return err
	}
	tokenURL := os.Getenv("KP_TOKEN_URL")
	if tokenURL == "" {
		tokenURL = url + "/identity/token"
	}
	c, err := kp.New(kp.ClientConfig{BaseURL: url, TokenURL: tokenURL, APIKey: apiKey, InstanceID: instance, Timeout: 15}, kp.DefaultTransport())
	if err != nil {
		return err
	}
	switch action {
	case "create-root":
		k, err := c.CreateRootKey(ctx, arg, nil)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k.ID)
		return nil
	case "show":
		k, err := c.GetKeyMetadata(ctx, key)
		if err != nil {
			return err
		}
		return printJSON(stdout, k)
	case "rotation-policy":
		var p *kp.Policy
		if arg == "off" {
			p, err = c.DisableRotationPolicy(ctx, key)
		} else {
			months, cerr := strconv.Atoi(arg)
			if cerr != nil || months < 1 || months > 12 {
				return fmt.Errorf("rotation-policy %q: want 1 to 12 months, or off", arg)
			}
			p, err = c.SetRotationPolicy(ctx, key, months, true)
		}
		if err != nil {
			return err
		}
		return printJSON(stdout, p)
	case "disable":
		err = c.DisableKey(ctx, key)
	case "enable":
		err = c.EnableKey(ctx, key)
	case "delete":
		_, err = c.DeleteKey(ctx, key, kp.ReturnMinimal)
	case "restore":
		_, err = c.RestoreKey(ctx, key)
	case "rotate":
		err = c.Rotate(ctx, key, "")
	case "sync":
		err = c.SyncAssociatedResources(ctx, key)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: ok\n", action, key)
	return nil
}

// refuse sets (or, with "off", clears) the emulator's Refusal fault and
// leaves its other faults as they are.
func refuse(ctx context.Context, url, preset string, stdout io.Writer) error {
	var f kpemu.Faults
	if err := admin(ctx, http.MethodGet, url+"/_kpemu/faults", nil, &f); err != nil {
		return err
	}
	f.Refusal, f.RefusalRate = preset, 0
	if preset == "off" {
		f.Refusal = ""
	}
	if err := admin(ctx, http.MethodPut, url+"/_kpemu/faults", f, &f); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "refuse %s: ok\n", preset)
	return nil
}

// admin calls kpemu's admin API with a JSON body and decodes its answer.
func admin(ctx context.Context, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("kpemu admin %s %s: %s", method, url, e.Error)
		}
		return fmt.Errorf("kpemu admin %s %s: %s (is KP_URL the emulator?)", method, url, resp.Status)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, strings.TrimSpace(string(b)))
	return err
}
