//! Host network devices, without running `ip`: named network namespaces (as `ip netns`
//! keeps them) and work inside them ([`netns`]), links, addresses, routes and XDP
//! attachments over route netlink ([`netlink`]), a pod's namespace and veth pair
//! ([`PodLink`]), and the tap devices VM guests' NICs are.
//!
//! Everything is async on tokio; [`block_on`] runs it from synchronous code, inside or
//! outside a runtime.

pub mod netlink;
pub mod netns;
pub mod pod;

pub use netlink::{LinkChange, Netlink};
pub use pod::PodLink;

/// Runs `f` to completion on a runtime of its own, on a thread of its own: usable from
/// synchronous code whether or not a tokio runtime is running on this thread.
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
