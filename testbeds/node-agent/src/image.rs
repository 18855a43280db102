//! The tag of a container image reference: what picks the binary version a member runs.

/// The tag of `image` (`quay.io/openbao/openbao:2.7.2` → `2.7.2`); `latest` when it has none,
/// as a container runtime reads it. A digest (`@sha256:…`) is not a tag and is ignored.
pub fn tag(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A registry's port (`registry.local:5000/x`) is before the last `/`, a tag after it.
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

#[cfg(test)]
mod tests {
    use super::tag;

    #[test]
    fn the_tag_is_after_the_last_colon_of_the_last_path_part() {
        assert_eq!(tag("openbao:2.6.2"), "2.6.2");
        assert_eq!(tag("quay.io/openbao/openbao:2.7.2"), "2.7.2");
        assert_eq!(tag("registry.local:5000/openbao:2.7.2"), "2.7.2");
        assert_eq!(tag("registry.local:5000/openbao"), "latest");
        assert_eq!(tag("openbao"), "latest");
        assert_eq!(tag("openbao:2.7.2@sha256:abcd"), "2.7.2");
        assert_eq!(tag("openbao@sha256:abcd"), "latest");
    }
}
