// Command kubectl is the real kubectl of Kubernetes v1.37.2 (k8s.io/kubectl),
// built from the Go module proxy by hack/tools.sh for the test world:
// TestWalkthrough runs the README's kubectl commands with it, as written.
// Its body is kubernetes' cmd/kubectl/kubectl.go, which lives in the
// k8s.io/kubernetes module and so cannot be built without that module's
// replace directives; this module needs none.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Import to initialize client auth plugins.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	// As upstream: the verbosity is set before the command is built, so
	// klog works while plugins and .kuberc are handled.
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) //nolint:errcheck // as upstream
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		// Pretty-print the error and exit with an error.
		util.CheckErr(err)
	}
}
