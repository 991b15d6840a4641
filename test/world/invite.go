package world

import (
	"context"
	"fmt"
	"regexp"
)

var inviteToken = regexp.MustCompile(`/web/invite/([0-9a-f]+)`)

// AcceptInvite does what a person does with the link `tctl users add` prints:
// opens it and chooses a password (the call Teleport's web page makes). It
// takes tctl's output and returns the password, for `tsh login` to be typed
// into. It stands in for the browser, which the world has not.
func (tp *Teleport) AcceptInvite(ctx context.Context, tctlOutput string) (string, error) {
	m := inviteToken.FindStringSubmatch(tctlOutput)
	if m == nil {
		return "", fmt.Errorf("no invite link (/web/invite/<token>) in tctl's output:\n%s", tctlOutput)
	}
	password := "W0rld-" + randomHex(12)
	if err := setPassword(ctx, m[1], password); err != nil {
		return "", fmt.Errorf("setting the password from the invite link: %w", err)
	}
	return password, nil
}
