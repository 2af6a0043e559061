//! Project networking: per-domain infra namespaces with one bridge per network, container
//! endpoints (veth pairs), address allocation, the embedded DNS resolver, published ports and
//! egress through a userland proxy. This layer knows nothing of Compose: it takes
//! `NetworkConfig` and `EndpointConfig`.

pub mod dns;
pub mod error;
pub mod nft;
pub mod proxy;

pub use error::{NetworkError, Result};
