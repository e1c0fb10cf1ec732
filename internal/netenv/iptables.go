package netenv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
)

// iptFirewall renders the policy into four chains of its own,
// <NAME>-INPUT and <NAME>-FORWARD in table filter, <NAME>-POSTROUTING in
// table nat and <NAME>-PREROUTING in table raw (ahead of nat's DNAT),
// each entered by a single jump inserted at the top of the built-in
// chain. Being first matters here, unlike with nftables: in one
// iptables table the first terminal verdict wins, so a jump placed after
// another ACCEPT would never see the packet. It drives the iptables command
// (whichever variant, nf_tables or legacy, the host has) because the
// iptables netlink/sockopt interfaces are private to that command.
//
// iptables sees IPv4 only; the policy's NotIPv4 rule is not rendered. That
// is safe because IPv6 is disabled on the bridge and on every environment's
// interface, so no IPv6 packet from an environment is ever routed.
type iptFirewall struct {
	prefix string // chain name prefix, e.g. "NUBO-"
	bin    string
	log    *slog.Logger
}

// iptChains maps each hook to its table, built-in chain and our chain suffix.
var iptChains = map[Hook]struct{ table, builtin string }{
	HookInput:       {"filter", "INPUT"},
	HookForward:     {"filter", "FORWARD"},
	HookPostrouting: {"nat", "POSTROUTING"},
	// raw's PREROUTING runs first, ahead of conntrack and nat's DNAT.
	HookPrerouting: {"raw", "PREROUTING"},
}

// iptHooks are the hooks the backend has chains for, in Setup order.
var iptHooks = []Hook{HookInput, HookForward, HookPostrouting, HookPrerouting}

// iptTables are the tables the backend uses, in Setup order.
var iptTables = []string{"filter", "nat", "raw"}

func newIptables(name string, log *slog.Logger) (Firewall, error) {
	bin, err := exec.LookPath("iptables")
	if err != nil {
		return nil, fmt.Errorf("%w: iptables: %v", ErrUnavailable, err)
	}
	f := &iptFirewall{prefix: strings.ToUpper(name) + "-", bin: bin, log: log}
	// Listing a table is harmless and proves both the command and the
	// kernel side (nat included) work.
	for _, t := range iptTables {
		if _, err := f.run(t, "-S"); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	return f, nil
}

func (f *iptFirewall) Name() string { return BackendIptables }

// variant reports which iptables the host has ("nf_tables" or "legacy").
func (f *iptFirewall) variant() string {
	out, err := exec.Command(f.bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	s := string(out)
	if i, j := strings.Index(s, "("), strings.Index(s, ")"); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return "legacy"
}

func (f *iptFirewall) chain(h Hook) string { return f.prefix + iptChains[h].builtin }

func (f *iptFirewall) Setup(p Policy) error {
	if err := f.Teardown(); err != nil {
		return err
	}
	for _, h := range iptHooks {
		if _, err := f.run(iptChains[h].table, "-N", f.chain(h)); err != nil {
			return err
		}
	}
	for _, r := range p.Rules() {
		args, ok := iptArgs(f.chain(r.Hook), r)
		if !ok {
			continue
		}
		if _, err := f.run(iptChains[r.Hook].table, args...); err != nil {
			return err
		}
	}
	// Jumps last: a chain becomes reachable only once it is complete.
	for _, h := range iptHooks {
		c := iptChains[h]
		if _, err := f.run(c.table, "-I", c.builtin, "1", "-j", f.chain(h)); err != nil {
			return err
		}
	}
	return nil
}

// Teardown deletes every rule in any chain that jumps to a chain of ours,
// then our chains. It finds them by listing rather than by remembering, so
// it also removes what a crashed earlier process left, whatever the policy
// it installed.
func (f *iptFirewall) Teardown() error {
	_, err := f.teardown()
	return err
}

func (f *iptFirewall) teardown() (removed []string, err error) {
	var errs []error
	for _, t := range iptTables {
		out, err := f.run(t, "-S")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var ours []string
		for _, line := range strings.Split(out, "\n") {
			args, err := splitIptablesLine(line)
			if err != nil || len(args) < 2 {
				continue
			}
			switch {
			case args[0] == "-N" && strings.HasPrefix(args[1], f.prefix):
				ours = append(ours, args[1])
			case args[0] == "-A" && !strings.HasPrefix(args[1], f.prefix) && jumpsTo(args, f.prefix):
				args[0] = "-D"
				if _, err := f.run(t, args...); err != nil {
					errs = append(errs, err)
				} else {
					removed = append(removed, "iptables rule -t "+t+" "+strings.Join(args[1:], " "))
				}
			}
		}
		for _, c := range ours {
			if _, err := f.run(t, "-F", c); err != nil {
				errs = append(errs, err)
			}
		}
		for _, c := range ours {
			if _, err := f.run(t, "-X", c); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, "iptables chain -t "+t+" "+c)
			}
		}
	}
	return removed, errors.Join(errs...)
}

func jumpsTo(args []string, prefix string) bool {
	for i := 0; i+1 < len(args); i++ {
		if (args[i] == "-j" || args[i] == "-g") && strings.HasPrefix(args[i+1], prefix) {
			return true
		}
	}
	return false
}

func (f *iptFirewall) run(table string, args ...string) (string, error) {
	// -w: wait for the xtables lock instead of failing when another
	// program (a container runtime, a firewall daemon) holds it.
	full := append([]string{"-w", "5", "-t", table}, args...)
	var stderr bytes.Buffer
	cmd := exec.Command(f.bin, full...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("iptables %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// iptArgs renders r as an append to chain; ok is false for rules iptables
// cannot see (NotIPv4).
func iptArgs(chain string, r Rule) (args []string, ok bool) {
	if r.NotIPv4 {
		return nil, false
	}
	args = []string{"-A", chain}
	neg := func(not bool) {
		if not {
			args = append(args, "!")
		}
	}
	if !r.In.any() {
		neg(r.In.Not)
		args = append(args, "-i", r.In.Name)
	}
	if !r.Out.any() {
		neg(r.Out.Not)
		args = append(args, "-o", r.Out.Name)
	}
	if !r.Src.any() {
		neg(r.Src.Not)
		args = append(args, "-s", r.Src.Prefix.Masked().String())
	}
	if !r.Dst.any() {
		neg(r.Dst.Not)
		args = append(args, "-d", r.Dst.Prefix.Masked().String())
	}
	if r.Replies {
		args = append(args, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
	}
	if r.TCPDstPort != 0 {
		args = append(args, "-p", "tcp", "--dport", strconv.Itoa(int(r.TCPDstPort)))
	}
	if r.DstLocal {
		args = append(args, "-m", "addrtype", "--dst-type", "LOCAL")
	}
	if r.Comment != "" {
		args = append(args, "-m", "comment", "--comment", r.Comment)
	}
	switch r.Action {
	case Accept:
		args = append(args, "-j", "ACCEPT")
	case Drop:
		args = append(args, "-j", "DROP")
	case Masquerade:
		args = append(args, "-j", "MASQUERADE")
	case Pass:
		// Back to the built-in chain, at the rule after our jump: the
		// host's own rules decide.
		args = append(args, "-j", "RETURN")
	default:
		panic(fmt.Sprintf("netenv: rule action %v cannot be rendered", r.Action))
	}
	return args, true
}

// splitIptablesLine splits one line of `iptables -S` into arguments. The
// command quotes an argument containing spaces with double quotes and
// escapes `"` and `\` inside it with a backslash.
func splitIptablesLine(line string) ([]string, error) {
	var (
		args   []string
		cur    strings.Builder
		inArg  bool
		quoted bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case quoted && c == '"':
			quoted = false
		case !quoted && c == '"':
			quoted, inArg = true, true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
