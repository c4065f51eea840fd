package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

const ctlUsage = `usage: kpemu ctl ACTION [KEY]

Plays the customer against a Key Protect endpoint (the emulator or the real
service) with the real keyprotect-go-client. Reads KP_URL, KP_API_KEY,
KP_INSTANCE_ID and, when KEY is left out, KP_ROOT_KEY_ID from the
environment (byokd --dev writes them to .dev/kpemu.env). KP_TOKEN_URL
defaults to $KP_URL/identity/token.

ACTION: show | disable | enable | delete | restore | rotate | create-root NAME`

// ctl runs one customer action against Key Protect.
func ctl(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(ctlUsage)
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	action := args[0]
	if action == "create-root" {
		if len(args) != 2 {
			return errors.New(ctlUsage)
		}
		k, err := c.CreateRootKey(ctx, args[1], nil)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k.ID)
		return nil
	}
	var key string
	switch len(args) {
	case 1:
		if key, err = env("KP_ROOT_KEY_ID"); err != nil {
			return err
		}
	case 2:
		key = args[1]
	default:
		return errors.New(ctlUsage)
	}
	switch action {
	case "show":
		k, err := c.GetKeyMetadata(ctx, key)
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(k, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
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
	default:
		return errors.New(ctlUsage)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: ok\n", action, key)
	return nil
}
