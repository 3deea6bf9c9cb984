import VPipeCore

/// The SVG of `make bench-paper`: measured tokens/s per plan (VPIPE, GPIPE, PIPEDREAM) for
/// every model, device count and memory budget, as grouped bars; a plan that did not run
/// (out of memory) is marked with a cross at zero.
enum PaperPlot {
    static let colors: [PlannerKind: String] = [.vpipe: "#4e79a7", .gpipe: "#f28e2b", .pipedream: "#59a14f"]

    static func svg(_ rows: [PaperBench.Row], tokens: Int) -> String {
        let left = 70.0, top = 50.0, plotHeight = 260.0, bar = 14.0, gap = 18.0
        let group = Double(PaperBench.plans.count) * bar + gap
        let width = left + Double(rows.count) * group + 30
        let height = top + plotHeight + 150
        let rates = rows.flatMap { $0.outcomes.compactMap { $0.measuredSeconds.map { Double(tokens) / $0 } } }
        let top_ = niceCeiling(rates.max() ?? 1)
        func y(_ v: Double) -> Double { top + plotHeight - v / top_ * plotHeight }
        func n(_ v: Double) -> String { formatFixed(v, decimals: 1) }
        var out = #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(n(width))" height="\#(n(height))" font-family="sans-serif" font-size="11">"# + "\n"
        out += #"<rect width="100%" height="100%" fill="white"/>"# + "\n"
        out += #"<text x="10" y="20" font-size="14" font-weight="bold">Measured training throughput (tokens/s) per plan and memory budget (make bench-paper)</text>"# + "\n"
        for k in 0...4 {
            let v = top_ * Double(k) / 4
            out += #"<line x1="\#(n(left))" x2="\#(n(width - 20))" y1="\#(n(y(v)))" y2="\#(n(y(v)))" stroke="rgb(221,221,221)"/>"# + "\n"
            out += #"<text x="\#(n(left - 6))" y="\#(n(y(v) + 4))" text-anchor="end">\#(formatFixed(v, decimals: 0))</text>"# + "\n"
        }
        for (g, row) in rows.enumerated() {
            let x0 = left + Double(g) * group + gap / 2
            for (b, o) in row.outcomes.enumerated() {
                let x = x0 + Double(b) * bar
                let color = color(o.plan)
                if let m = o.measuredSeconds {
                    let v = Double(tokens) / m
                    out += #"<rect x="\#(n(x))" y="\#(n(y(v)))" width="\#(n(bar - 2))" height="\#(n(y(0) - y(v)))" fill="\#(color)"><title>\#(o.plan.name): \#(formatFixed(v, decimals: 0)) tokens/s</title></rect>"# + "\n"
                } else {
                    out += #"<text x="\#(n(x + bar / 2 - 1))" y="\#(n(y(0) - 3))" text-anchor="middle" fill="\#(color)" font-weight="bold"><title>\#(escape(o.plan.name + ": " + (o.error ?? "did not run")))</title>×</text>"# + "\n"
                }
            }
            let cx = x0 + group / 2 - gap / 2
            let budget = row.budget.name.split(separator: " ").first.map(String.init) ?? ""
            let label = "\(row.setup.split(separator: " ").prefix(2).joined(separator: " ")), p=\(row.stages), \(budget == "everything" ? "fits" : budget == "some" ? "some" : "few")"
            out += #"<text transform="translate(\#(n(cx)),\#(n(y(0) + 10))) rotate(45)" font-size="10">\#(escape(label))</text>"# + "\n"
        }
        var lx = left
        for kind in PaperBench.plans {
            out += #"<rect x="\#(n(lx))" y="30" width="12" height="12" fill="\#(color(kind))"/><text x="\#(n(lx + 16))" y="40">\#(kind.name)</text>"# + "\n"
            lx += 100
        }
        out += #"<text x="\#(n(lx))" y="40">× = out of memory (did not run)</text>"# + "\n"
        out += "</svg>\n"
        return out
    }

    static func color(_ kind: PlannerKind) -> String { colors[kind] ?? "gray" }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// 1, 2 or 5 × a power of ten, at least v.
    static func niceCeiling(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        var p = 1.0
        while p * 10 <= v { p *= 10 }
        while p > v { p /= 10 }
        for m in [1.0, 2.0, 5.0, 10.0] where m * p >= v { return m * p }
        return 10 * p
    }
}
