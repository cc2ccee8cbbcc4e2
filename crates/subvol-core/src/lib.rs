//! The pure core of subvol: everything that can be decided without touching
//! the operating system. Names, sizes, the metadata encoding, extent maps and
//! the parsing of kernel tables live here so they can be property-tested
//! without root.
#![forbid(unsafe_code)]

pub mod capacity;
pub mod chunk_read;
pub mod chunks;
pub mod damage_map;
pub mod diff;
pub mod duration;
pub mod encryption;
pub mod endpoint;
pub mod exposition;
pub mod extent;
pub mod foreign_name;
pub mod fstype;
pub mod manifest;
pub mod meta;
pub mod mountinfo;
pub mod mountopts;
pub mod name;
pub mod record_chunks;
pub mod retention;
pub mod scrub;
pub mod size;
pub mod space;
pub mod stream;
pub mod sync_target;
pub mod text;
pub mod token;

pub use endpoint::{Endpoint, EndpointError};
pub use extent::{Extent, ExtentFlags, ExtentMap};
pub use fstype::{FsKind, HostFs};
pub use meta::{MetaError, ObjectKind, PoolMeta, SubvolumeMeta};
pub use name::{NameError, ObjectName};
pub use size::{format_size, parse_size, SizeError};
