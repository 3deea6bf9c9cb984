/// Exporters of a `SimulationReport` for people: a Chrome trace (open it in Perfetto,
/// ui.perfetto.dev, or chrome://tracing) here, and an SVG timeline (TimelineSVG.swift).
/// Both are plain string builders, so VPipeCore stays free of Foundation.
public enum TraceExport {
    /// Thread ids inside a stage's process in the Chrome trace.
    static func tid(_ resource: SimulationReport.Resource, stage: Int) -> Int {
        switch resource {
        case .compute: return 0
        case .copy: return 1
        case let .link(k): return k == stage ? 2 : 3
        }
    }

    static let threadNames = ["compute", "copy engine", "send to next stage", "send to previous stage"]

    /// Chrome trace event format (JSON object form): one process per stage (pid = stage),
    /// one thread per resource (tid 0 compute, 1 copy engine, 2 sends forward, 3 sends
    /// backward), complete events (`ph: "X"`) in microseconds, and a `memory` counter per
    /// stage (`ph: "C"`, bytes).
    public static func chromeTrace(_ report: SimulationReport) -> String {
        var items: [String] = []
        for i in report.stages.indices {
            items.append(#"{"name":"process_name","ph":"M","pid":\#(i),"tid":0,"args":{"name":"stage \#(i)"}}"#)
            items.append(#"{"name":"process_sort_index","ph":"M","pid":\#(i),"tid":0,"args":{"sort_index":\#(i)}}"#)
            for (t, name) in threadNames.enumerated() {
                items.append(#"{"name":"thread_name","ph":"M","pid":\#(i),"tid":\#(t),"args":{"name":"\#(name)"}}"#)
            }
        }
        for e in report.events {
            let a = e.action
            let name = "\(a.kind.token)\(a.microBatch)"
            items.append(#"{"name":"\#(name)","cat":"\#(a.kind.phrase)","ph":"X","pid":\#(a.stage),"tid":\#(tid(e.resource, stage: a.stage)),"#
                + #""ts":\#(micros(e.start)),"dur":\#(micros(e.end - e.start)),"#
                + #""args":{"action":"\#(a)","micro_batch":\#(a.microBatch),"resource":"\#(e.resource.name)"}}"#)
        }
        for (i, s) in report.stages.enumerated() {
            for point in s.memory {
                items.append(#"{"name":"memory","ph":"C","pid":\#(i),"ts":\#(micros(point.time)),"args":{"bytes":\#(formatFixed(point.bytes, decimals: 0))}}"#)
            }
        }
        return "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + items.joined(separator: ",\n") + "\n]}\n"
    }

    static func micros(_ seconds: Double) -> String { formatFixed(seconds * 1e6, decimals: 3) }
}
