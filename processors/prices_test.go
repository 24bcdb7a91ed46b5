package processors

import (
	"math"
	"testing"
)

func TestDefaultPrices_MatchPublishedTable(t *testing.T) {
	t.Parallel()
	// Parallel publishes dollars per 1,000 runs; -fast costs the same.
	perThousand := map[string]float64{
		"lite": 5, "base": 10, "core": 25, "core2x": 50, "pro": 100,
		"ultra": 300, "ultra2x": 600, "ultra4x": 1200, "ultra8x": 2400,
	}
	if len(DefaultPrices) != 2*len(perThousand) {
		t.Errorf("%d prices, want %d", len(DefaultPrices), 2*len(perThousand))
	}
	for name, usd := range perThousand {
		for _, n := range []string{name, name + "-fast"} {
			if got := DefaultPrices[n]; math.Abs(got-usd/1000) > 1e-12 {
				t.Errorf("%s: %g per run, want %g", n, got, usd/1000)
			}
		}
	}
	if usd, ok := EstimateCost(" Core-Fast", 10000); !ok || math.Abs(usd-250) > 1e-9 {
		t.Errorf("10,000 core-fast runs cost %g, %v; want 250", usd, ok)
	}
	if _, ok := EstimateCost("synthetic", 1); ok {
		t.Error("synthetic has a Parallel price")
	}
}
