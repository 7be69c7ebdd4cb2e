//! Static pod manifests.
