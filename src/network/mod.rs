//! Project networking: per-domain infra namespaces with one bridge per network, container
//! endpoints (veth pairs), address allocation, the embedded DNS resolver, published ports and
//! egress through a userland proxy. This layer knows nothing of Compose: it takes
//! `NetworkConfig` and `EndpointConfig`.

pub mod daemon;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod lookup;
pub mod manager;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod proxy;
pub mod state;

pub use error::{NetworkError, Result};
pub use manager::{AttachConfig, EndpointConfig, NetworkConfig, Networks, PortConfig};
pub use state::{EndpointRecord, NetworkRecord, PortRecord, Proto};
