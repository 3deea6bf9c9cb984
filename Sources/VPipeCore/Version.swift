/// The library's version: the one place it is written. `vp_version()`, `vpipe --version`
/// and the Makefile's `VERSION` (pkg-config) read it from here; the Python package's
/// `__version__` is checked against `vp_version()` by its tests.
public enum LibraryVersion {
    public static let string = "0.1.0"
}
