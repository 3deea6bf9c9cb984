/// The SVG timeline of a simulated iteration: a picture a person can look at without a
/// trace viewer (the CLI's `--svg`, the wire's `SimulationReport.svg`).
extension TraceExport {
    /// Fill colours per action kind (colour-blind-safe Tableau palette).
    static func color(_ kind: ScheduleAction.Kind) -> String {
        switch kind {
        case .forward: return "#4e79a7"
        case .backward: return "#59a14f"
        case .recompute: return "#f28e2b"
        case .swapOut: return "#b07aa1"
        case .swapIn: return "#d4a6c8"
        case .sendActivation: return "#9c9c9c"
        case .sendGradient: return "#6b6b6b"
        case .recvActivation, .recvGradient: return "#ffffff"
        }
    }

    /// An SVG timeline: one row per resource (each stage's compute, its copy engine when it
    /// swaps, and the link after it), one box per action labelled with its token and
    /// micro-batch when it fits, a time axis, and a legend. Hovering a box shows the action
    /// and its times.
    public static func svg(_ report: SimulationReport, title: String = "") -> String {
        var rows: [(label: String, resource: SimulationReport.Resource)] = []
        let p = report.stages.count
        let copying = Set(report.events.compactMap { e -> Int? in if case let .copy(i) = e.resource { return i } else { return nil } })
        for i in 0..<p {
            rows.append(("stage \(i) compute", .compute(i)))
            if copying.contains(i) { rows.append(("stage \(i) copy", .copy(i))) }
            if i < p - 1 { rows.append(("link \(i)-\(i + 1)", .link(i))) }
        }
        let left = 130.0, plotWidth = 1000.0, rowHeight = 26.0, top = 40.0
        let width = left + plotWidth + 20
        let axisY = top + Double(rows.count) * rowHeight + 4
        let height = axisY + 60
        let total = max(report.iterationSeconds, 1e-300)
        func x(_ t: Double) -> Double { left + t / total * plotWidth }
        func n(_ v: Double) -> String { formatFixed(v, decimals: 2) }

        var out = #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(n(width))" height="\#(n(height))" font-family="sans-serif" font-size="11">"# + "\n"
        out += #"<rect width="100%" height="100%" fill="white"/>"# + "\n"
        let heading = (title.isEmpty ? "" : title + " · ") + "\(report.schedule.kind.name), p=\(p), m=\(report.schedule.microBatches), "
            + "iteration \(formatSeconds(report.iterationSeconds))"
            + (report.costModelIterationSeconds > 0 ? " (cost model \(formatSeconds(report.costModelIterationSeconds)))" : "")
        out += #"<text x="10" y="20" font-size="14" font-weight="bold">\#(xmlEscape(heading))</text>"# + "\n"
        var rowOf: [SimulationReport.Resource: Int] = [:]
        for (r, row) in rows.enumerated() {
            rowOf[row.resource] = r
            let y = top + Double(r) * rowHeight
            if r % 2 == 0 {
                out += #"<rect x="\#(n(left))" y="\#(n(y))" width="\#(n(plotWidth))" height="\#(n(rowHeight))" fill="rgb(244,244,244)"/>"# + "\n"
            }
            out += #"<text x="8" y="\#(n(y + rowHeight / 2 + 4))">\#(xmlEscape(row.label))</text>"# + "\n"
        }
        for e in report.events {
            guard let r = rowOf[e.resource] else { continue }
            let y = top + Double(r) * rowHeight + 3
            let x0 = x(e.start), w = max(x(e.end) - x0, 0.5)
            let label = "\(e.action.kind.token)\(e.action.microBatch)"
            out += #"<g><title>\#(e.action) \#(e.action.kind.phrase) of micro-batch \#(e.action.microBatch): "#
                + #"\#(formatSeconds(e.start)) – \#(formatSeconds(e.end))</title>"#
            out += #"<rect x="\#(n(x0))" y="\#(n(y))" width="\#(n(w))" height="\#(n(rowHeight - 6))" fill="\#(color(e.action.kind))" stroke="rgb(51,51,51)" stroke-width="0.5"/>"#
            if w >= Double(label.count) * 7 + 4 {
                out += #"<text x="\#(n(x0 + w / 2))" y="\#(n(y + rowHeight / 2 + 1))" text-anchor="middle" fill="white">\#(label)</text>"#
            }
            out += "</g>\n"
        }
        // Time axis with 1-2-5 ticks.
        out += #"<line x1="\#(n(left))" y1="\#(n(axisY))" x2="\#(n(left + plotWidth))" y2="\#(n(axisY))" stroke="black"/>"# + "\n"
        let step = tickStep(total / 8)
        var t = 0.0, k = 0
        while t <= total * (1 + 1e-9) && k <= 100 {
            out += #"<line x1="\#(n(x(t)))" y1="\#(n(axisY))" x2="\#(n(x(t)))" y2="\#(n(axisY + 5))" stroke="black"/>"#
            out += #"<text x="\#(n(x(t)))" y="\#(n(axisY + 17))" text-anchor="middle">\#(formatSeconds(t))</text>"# + "\n"
            k += 1
            t = Double(k) * step
        }
        // Legend.
        var lx = left
        for kind in [ScheduleAction.Kind.forward, .backward, .recompute, .swapOut, .swapIn, .sendActivation, .sendGradient] {
            out += #"<rect x="\#(n(lx))" y="\#(n(axisY + 30))" width="12" height="12" fill="\#(color(kind))" stroke="rgb(51,51,51)" stroke-width="0.5"/>"#
            out += #"<text x="\#(n(lx + 16))" y="\#(n(axisY + 40))">\#(kind.token) \#(kind.phrase)</text>"# + "\n"
            // About 7 px per character of label at the default font size, plus the swatch.
            lx += Double(28 + 7 * (kind.token.count + 1 + kind.phrase.count))
        }
        return out + "</svg>\n"
    }

    /// The smallest of 1, 2, 5 × 10^k that is ≥ `rough`.
    static func tickStep(_ rough: Double) -> Double {
        guard rough.isFinite, rough > 0 else { return 1 }
        var scale = 1.0
        while scale > rough { scale /= 10 }
        while scale * 10 <= rough { scale *= 10 }
        for f in [1.0, 2.0, 5.0, 10.0] where scale * f >= rough { return scale * f }
        return scale * 10
    }

    static func xmlEscape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
