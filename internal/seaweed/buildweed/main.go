// Command buildweed builds SeaweedFS's weed binary into Ordo's cache once
// (seaweed.Build) and prints its path: `scripts/install-deps s3` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/ordoflow/ordo/internal/seaweed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	bin, err := seaweed.Build(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(bin)
}
