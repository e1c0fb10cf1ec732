package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"
	"time"
)

// The chart is hand-written SVG: one percentile-distribution panel per
// latency kind (warm, cold) and a bar panel for throughput. The percentile
// axis is stretched towards the tail (x = −log10(1 − q), so 90%, 99% and
// 99.9% are equally spaced), because the tail is where platforms differ;
// latency is on a log scale so a 0.5 ms and a 50 ms series share a panel.

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"}

const (
	svgW     = 1100
	panelH   = 440
	barH     = 360
	marginL  = 80
	marginR  = 330 // the legend lives here
	marginT  = 50
	marginB  = 60
	plotW    = svgW - marginL - marginR
	plotHCDF = panelH - marginT - marginB
)

func writeSVG(path string, r *results) error {
	var panels []string
	y := 0
	title := fmt.Sprintf("nubo-bench %s", r.Started.UTC().Format(time.RFC3339))
	for _, p := range []struct{ key, title string }{
		{"warm", "Warm invoke latency (sequential, 100-byte payload)"},
		{"cold", "Cold start / process start latency"},
	} {
		var ss []*Series
		for _, s := range r.order {
			if s.Panel == p.key && len(s.Samples) > 0 {
				ss = append(ss, s)
			}
		}
		if len(ss) == 0 {
			continue
		}
		panels = append(panels, cdfPanel(y, p.title, ss))
		y += panelH
	}
	if len(r.Throughput) > 0 {
		panels = append(panels, barPanel(y, "Warm throughput (requests/s)", r.Throughput))
		y += barH
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, y+30, svgW, y+30)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
	b.WriteString(`<g transform="translate(0,30)">` + "\n")
	for _, p := range panels {
		b.WriteString(p)
	}
	b.WriteString("</g>\n</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func esc(s string) string { return html.EscapeString(s) }

func tailX(q float64) float64 { return -math.Log10(1 - q) }

func cdfPanel(top int, title string, ss []*Series) string {
	var b strings.Builder
	lo, hi, xmax := math.Inf(1), math.Inf(-1), 0.0
	sorted := make([][]time.Duration, len(ss))
	for i, s := range ss {
		c := sortedCopy(s.Samples)
		sorted[i] = c
		lo = math.Min(lo, ms(max(c[0], time.Microsecond)))
		hi = math.Max(hi, ms(c[len(c)-1]))
		xmax = math.Max(xmax, math.Log10(float64(len(c))))
	}
	// Decade-aligned latency range, at least one decade.
	ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yhi <= ylo {
		yhi = ylo + 1
	}
	xmax = math.Max(xmax, 2)
	px := func(x float64) float64 { return marginL + x/xmax*plotW }
	py := func(v float64) float64 {
		return float64(top+marginT) + plotHCDF - (math.Log10(v)-ylo)/(yhi-ylo)*plotHCDF
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", marginL, top+marginT-15, esc(title))
	// Grid: latency at 1, 2, 5 per decade; percentiles at 0, 50, 90, 99, 99.9, 99.99.
	for d := ylo; d <= yhi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > yhi+1e-9 {
				break
			}
			yy := py(v)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", marginL, yy, px(xmax), yy, stroke)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, yy+4, fmtMs(v))
		}
	}
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 0.9999} {
		x := tailX(q)
		if x > xmax+1e-9 {
			break
		}
		xx := px(x)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xx, top+marginT, xx, top+marginT+plotHCDF)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">p%s</text>`+"\n", xx, top+marginT+plotHCDF+16, strings.TrimSuffix(fmt.Sprintf("%g", q*100), ".0"))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">percentile (tail-stretched)</text>`+"\n", px(xmax/2), top+marginT+plotHCDF+36)
	fmt.Fprintf(&b, `<text transform="translate(%d,%.1f) rotate(-90)" text-anchor="middle">latency (ms, log)</text>`+"\n", 18, float64(top+marginT)+plotHCDF/2)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", marginL, top+marginT, plotW, plotHCDF)
	for i, c := range sorted {
		col := palette[i%len(palette)]
		n := len(c)
		var pts []string
		lastX := -1.0
		for k := 0; k < n; k++ {
			// The fraction of samples strictly below this one, so the
			// slowest sample of n sits at −log10(1/n).
			x := tailX(float64(k) / float64(n))
			if k != n-1 && x-lastX < xmax/800 {
				continue
			}
			lastX = x
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(x), py(ms(max(c[k], time.Microsecond)))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		sum, _ := ss[i].Summarize()
		ly := top + marginT + 10 + i*34
		lx := marginL + plotW + 15
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+20, ly, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+26, ly+4, esc(ss[i].Label))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">n=%d p50 %s p99 %s ms</text>`+"\n", lx+26, ly+18, sum.N, fmtMs(sum.P50), fmtMs(sum.P99))
	}
	return b.String()
}

func fmtMs(v float64) string {
	switch {
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	case v >= 0.1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func barPanel(top int, title string, ts []*throughput) string {
	var b strings.Builder
	h := barH - marginT - marginB
	vmax := 0.0
	for _, t := range ts {
		vmax = math.Max(vmax, t.PerSecond)
	}
	if vmax <= 0 {
		vmax = 1
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", marginL, top+marginT-15, esc(title))
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", marginL, top+marginT, plotW, h)
	slot := float64(plotW) / float64(len(ts))
	for i, t := range ts {
		bh := t.PerSecond / vmax * float64(h-20)
		x := float64(marginL) + float64(i)*slot + slot*0.2
		yb := float64(top+marginT+h) - bh
		col := palette[0]
		if t.Name == "rie-seq" {
			col = palette[1]
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, yb, slot*0.6, bh, col)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`+"\n", x+slot*0.3, yb-4, t.PerSecond)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x+slot*0.3, top+marginT+h+16, esc(t.Label))
	}
	return b.String()
}
