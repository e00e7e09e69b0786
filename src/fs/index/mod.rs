//! The compact DRAM maps the core keeps beside the media: [`chunked`] (a
//! sorted map of depth two), [`extmap`] (an inode's extent map and the
//! reverse map, physical block -> owners) and [`dir`] (a directory's entries
//! by slot and by name).

pub mod chunked;
pub mod dir;
pub mod extmap;
