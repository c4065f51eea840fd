// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/kpemu"
)

const ctlInstance = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

// startCtlEnv starts an emulator and points kpemu ctl's environment at it.
func startCtlEnv(t *testing.T) *kpemu.Instance {
	t.Helper()
	in, err := kpemu.Listen(kpemu.Config{InstanceID: ctlInstance, APIKeys: []string{"ctl-test-key"}, ActionCooldown: -1}, "127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	t.Setenv("KP_URL", in.URL)
	t.Setenv("KP_API_KEY", "ctl-test-key")
	t.Setenv("KP_INSTANCE_ID", ctlInstance)
	t.Setenv("KP_TOKEN_URL", "")
	t.Setenv("KP_ROOT_KEY_ID", "")
	return in
}

// runCtl runs kpemu ctl and returns its output.
func runCtl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out strings.Builder
	err := ctl(args, &out)
	return out.String(), err
}

func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCtl(t, args...)
	if err != nil {
		t.Fatalf("kpemu ctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func TestCtlDrivesTheEmulator(t *testing.T) {
	in := startCtlEnv(t)
	id := strings.TrimSpace(mustCtl(t, "create-root", "demo-root"))
	if len(id) != 36 {
		t.Fatalf("create-root printed %q", id)
	}
	t.Setenv("KP_ROOT_KEY_ID", id)
	if out := mustCtl(t, "show"); !strings.Contains(out, id) {
		t.Fatalf("show: %s", out)
	}

	out := mustCtl(t, "rotation-policy", "2")
	if !strings.Contains(out, `"interval_month": 2`) || !strings.Contains(out, `"enabled": true`) {
		t.Fatalf("rotation-policy 2: %s", out)
	}
	if out := mustCtl(t, "rotation-policy", "off", id); !strings.Contains(out, `"enabled": false`) {
		t.Fatalf("rotation-policy off: %s", out)
	}
	if _, err := runCtl(t, "rotation-policy", "13"); err == nil {
		t.Fatal("rotation-policy 13 accepted")
	}

	mustCtl(t, "sync")
	if _, err := runCtl(t, "sync"); err == nil || !strings.Contains(err.Error(), "REQ_TOO_EARLY_ERR") {
		t.Fatalf("a second sync within the hour: %v", err)
	}

	// refuse sets only the refusal: the other faults stay.
	if err := in.SetFaults(kpemu.Faults{Latency: kpemu.Duration(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, "refuse", "network-policy")
	if f := in.CurrentFaults(); f.Refusal != kpemu.RefuseNetworkPolicy || f.Latency != kpemu.Duration(time.Millisecond) {
		t.Fatalf("faults after refuse: %+v", f)
	}
	if _, err := runCtl(t, "show"); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("show while refused: %v", err)
	}
	mustCtl(t, "refuse", "lb-404")
	if _, err := runCtl(t, "show"); err == nil || !strings.Contains(err.Error(), "<html") {
		t.Fatalf("show behind a load balancer's 404: %v", err)
	}
	if _, err := runCtl(t, "refuse", "firewall"); err == nil || !strings.Contains(err.Error(), "refusal") {
		t.Fatalf("an unknown preset: %v", err)
	}
	mustCtl(t, "refuse", "off")
	if f := in.CurrentFaults(); f.Refusal != "" || f.Latency != kpemu.Duration(time.Millisecond) {
		t.Fatalf("faults after refuse off: %+v", f)
	}
	mustCtl(t, "show")

	const crn = "crn:v1:bluemix:public:cloud-object-storage:global:a/0123456789abcdef:0b6e1f3a-1111-4222-8333-444455556666:bucket:demo"
	mustCtl(t, "register", crn)
	if _, err := runCtl(t, "delete"); err == nil || !strings.Contains(err.Error(), "PROTECTED_RESOURCE_ERR") {
		t.Fatalf("delete of a registered key: %v", err)
	}
	mustCtl(t, "register-retained", crn, id)
	mustCtl(t, "unregister", crn)
	if _, err := runCtl(t, "unregister", crn); err == nil {
		t.Fatal("unregister twice succeeded")
	}
	if out := mustCtl(t, "advance", "2h"); !strings.HasPrefix(out, "clock: ") {
		t.Fatalf("advance: %s", out)
	}
	if _, err := runCtl(t, "advance", "soon"); err == nil {
		t.Fatal("advance soon accepted")
	}
	mustCtl(t, "disable")
	mustCtl(t, "enable")
	mustCtl(t, "rotate")
	mustCtl(t, "delete")
	mustCtl(t, "restore")
}

func TestCtlUsageListsEveryAction(t *testing.T) {
	for action := range ctlActions {
		if !strings.Contains(ctlUsage, action) {
			t.Errorf("usage does not list %s", action)
		}
	}
	startCtlEnv(t)
	for _, args := range [][]string{{}, {"explode"}, {"refuse"}, {"rotation-policy"}, {"create-root"}, {"show", "a", "b"}, {"refuse", "hsm", "extra"}} {
		if _, err := runCtl(t, args...); err == nil || err.Error() != ctlUsage {
			t.Errorf("kpemu ctl %v: want the usage, got %v", args, err)
		}
	}
}
