//! berth: a daemonless, Compose-compatible multi-container engine.
//!
//! The library holds every layer; the `berth` binary only parses arguments and prints.

pub mod build;
pub mod cli;
pub mod compose;
pub mod fsutil;
pub mod graph;
pub mod image;
pub mod network;
pub mod reconcile;
pub mod runtime;

#[cfg(test)]
mod tests {
    /// build.rs links GCC's unwinder statically (no libgcc_s.so): panics must still unwind, run destructors
    /// and be caught, and a backtrace must still be taken.
    #[test]
    fn panics_unwind_with_the_static_unwinder() {
        struct Flag<'a>(&'a std::cell::Cell<bool>);
        impl Drop for Flag<'_> {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = std::cell::Cell::new(false);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _flag = Flag(&dropped);
            std::panic::panic_any(42u32);
        }));
        assert_eq!(
            caught.expect_err("the panic was caught").downcast_ref::<u32>(),
            Some(&42)
        );
        assert!(dropped.get(), "the destructor ran while unwinding");
        let trace = std::backtrace::Backtrace::force_capture();
        assert_eq!(trace.status(), std::backtrace::BacktraceStatus::Captured);
        assert!(
            trace.to_string().contains("panics_unwind_with_the_static_unwinder"),
            "{trace}"
        );
    }
}
