package main

import "runtime/debug"

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3"; empty means ask the build info.
var version string

// versionString is what --version prints: the -X version, else the main
// module's version that the go command stamped (a tag or a pseudo-version
// from VCS), else "dev".
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
