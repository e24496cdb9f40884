//! Configuration: XML and TOML readers producing one validated model.
mod model;
pub use model::*;

// Temporary until the readers land.
impl Config {
    /// Loads a configuration file.
    pub fn from_path(_path: &std::path::Path) -> Result<Config, std::io::Error> {
        Err(std::io::Error::other("config readers not yet integrated"))
    }
}
