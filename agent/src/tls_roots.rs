//! Nodes without CA certificates (no `ca-certificates` package, as in minimal images and the VM
//! tier's guest). `oci-client` builds `reqwest` clients whose TLS verifier loads the system's
//! roots, and it also makes a default `reqwest::Client` on every construction, which panics when
//! there are none: the agent aborted at its first pull, even from a plain-HTTP registry.
//!
//! [`ensure`] runs at startup, before any thread exists (it sets an environment variable). When
//! no roots can be loaded (from the system's places, or from `SSL_CERT_FILE`/`SSL_CERT_DIR` when
//! they are set), it points `SSL_CERT_FILE` at a memfd holding one freshly made self-signed certificate whose key is
//! thrown away: the TLS stack starts, trusts nothing real, and an HTTPS registry fails with an
//! unknown-issuer error in the pod's status instead of the process aborting. Plain-HTTP registries
//! and registries with their own CA (registry config) work as usual.

use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// Returns the `SSL_CERT_FILE` it set, if it set one.
pub fn ensure() -> Option<String> {
    if !rustls_native_certs::load_native_certs().certs.is_empty() {
        return None;
    }
    let pem = placeholder_pem()?;
    let fd = memfd_create(c"bosun-no-system-roots", MemFdCreateFlag::MFD_CLOEXEC).ok()?;
    let mut file = std::fs::File::from(fd);
    file.write_all(pem.as_bytes()).ok()?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    // Kept open for the life of the process: the path names this descriptor.
    let _ = file.into_raw_fd();
    std::env::set_var("SSL_CERT_FILE", &path);
    std::env::remove_var("SSL_CERT_DIR");
    tracing::warn!(
        "no CA certificates on this system (install ca-certificates): HTTPS registries cannot be \
         verified; plain-HTTP registries and registries with their own CA still work"
    );
    Some(path)
}

/// A self-signed certificate whose private key is dropped at once: it can sign nothing.
fn placeholder_pem() -> Option<String> {
    let key = rcgen::KeyPair::generate().ok()?;
    let params = rcgen::CertificateParams::new(vec!["bosun.invalid".to_string()]).ok()?;
    Some(params.self_signed(&key).ok()?.pem())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholder_is_a_certificate() {
        let pem = super::placeholder_pem().expect("placeholder");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }
}
