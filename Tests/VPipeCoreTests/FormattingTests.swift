import Testing
import VPipeCore

@Suite struct FormattingTests {
    @Test func fixed() {
        #expect(formatFixed(1.005, decimals: 2) == "1.00" || formatFixed(1.005, decimals: 2) == "1.01")
        #expect(formatFixed(-2.5, decimals: 1) == "-2.5")
        #expect(formatFixed(0, decimals: 3) == "0.000")
        #expect(formatFixed(12.345, decimals: 0) == "12")
    }

    @Test func bytesAndSeconds() {
        #expect(formatBytes(512) == "512 B")
        #expect(formatBytes(1536) == "1.50 KiB")
        #expect(formatBytes(16 * 1024 * 1024 * 1024) == "16.00 GiB")
        #expect(formatSeconds(0.0123) == "12.30 ms")
        #expect(formatSeconds(2.5e-6) == "2.5 us")
        #expect(formatSeconds(1.5) == "1.500 s")
    }

    @Test func policyRuns() {
        #expect(PlanTable.policyString([.keep, .swap, .recompute]) == "KSR")
        #expect(PlanTable.policyString(Array(repeating: .keep, count: 10) + [.recompute, .recompute]) == "K×10 R×2")
    }
}
