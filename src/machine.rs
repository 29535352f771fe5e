//! Facts about the machine ceso runs on.

/// This machine's host name (the kernel's node name), or `localhost` when it has none. Lock
/// holders and daemons name themselves with it.
pub fn host_name() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(super::host_name(), kernel.trim());
    }
}
