// Number formatting without Foundation (VPipeCore stays free of it so the library links
// small and static): fixed decimals, SI-style byte sizes and durations.

/// `value` with exactly `decimals` digits after the point, rounded half away from zero.
public func formatFixed(_ value: Double, decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    let negative = value < 0
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9.0e18 else { return "\(value)" }
    let units = UInt64(scaled)
    let whole = units / UInt64(scale)
    var text = "\(whole)"
    if decimals > 0 {
        var frac = "\(units % UInt64(scale))"
        while frac.count < decimals { frac = "0" + frac }
        text += "." + frac
    }
    return (negative && scaled > 0 ? "-" : "") + text
}

/// Bytes in binary units: `512 B`, `1.50 KiB`, `11.00 GiB`.
public func formatBytes(_ bytes: Double) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = bytes
    var u = 0
    while abs(v) >= 1024 && u < units.count - 1 {
        v /= 1024
        u += 1
    }
    return u == 0 ? "\(formatFixed(v, decimals: 0)) B" : "\(formatFixed(v, decimals: 2)) \(units[u])"
}

/// Seconds in a readable unit: `12.3 us`, `4.56 ms`, `1.234 s`.
public func formatSeconds(_ seconds: Double) -> String {
    let a = abs(seconds)
    if a == 0 { return "0 s" }
    if a < 1e-3 { return "\(formatFixed(seconds * 1e6, decimals: 1)) us" }
    if a < 1 { return "\(formatFixed(seconds * 1e3, decimals: 2)) ms" }
    return "\(formatFixed(seconds, decimals: 3)) s"
}

/// Left- or right-aligned padding to `width` characters.
func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let n = s.count
    guard n < width else { return s }
    let fill = String(repeating: " ", count: width - n)
    return right ? fill + s : s + fill
}
