// Command argocd runs the three parts of Argo CD the e2e tests need: the application
// controller, the repo server, and the askpass helper git calls back into (the repo server
// sets GIT_ASKPASS=argocd and ARGOCD_BINARY_NAME=argocd-git-ask-pass for it). Which part
// runs is named by ARGOCD_BINARY_NAME, else by the name the binary was started as.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	controller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	askpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
)

var parts = map[string]func() *cobra.Command{
	"argocd-application-controller": controller.NewCommand,
	"argocd-repo-server":            reposerver.NewCommand,
	"argocd-git-ask-pass":           askpass.NewCommand,
}

func main() {
	name := os.Getenv("ARGOCD_BINARY_NAME")
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	newCommand, found := parts[name]
	if !found {
		known := make([]string, 0, len(parts))
		for part := range parts {
			known = append(known, part)
		}
		sort.Strings(known)
		fmt.Fprintf(os.Stderr, "argocd: set ARGOCD_BINARY_NAME to one of %v (got %q)\n", known, name)
		os.Exit(2)
	}
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}
