//! Field validation shared by every kind: names, labels, and the error shape the API reports.

use std::collections::BTreeMap;
use std::fmt;

/// One invalid field: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, `spec.containers[0].image`.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects field errors while a validator walks an object.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    /// Records an error.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records the error of `check` if there is one.
    pub fn check(&mut self, field: impl Into<String>, check: Result<(), String>) {
        if let Err(message) = check {
            self.push(field, message);
        }
    }

    /// Ok when nothing was recorded.
    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Checks a DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
/// Tenants, namespaces and container names are labels.
pub fn dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "must be no more than 63 characters (is {})",
            name.len()
        ));
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
    let b = name.as_bytes();
    if !b.iter().all(|&c| ok_char(c)) || b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(format!(
            "{name:?} must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a path-segment name (RBAC roles and bindings, as Kubernetes allows them:
/// `system:controller:x`): 1 to 253 printable ASCII characters without spaces, `/` or `%`,
/// and not `.` or `..`.
pub fn path_segment(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "must be no more than 253 characters (is {})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} may not be a name"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_graphic() && c != b'/' && c != b'%')
    {
        return Err(format!(
            "{name:?} must consist of printable ASCII characters other than spaces, '/' and '%'"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: at most 253 characters of dot-separated labels.
/// Most object names are subdomains.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "must be no more than 253 characters (is {})",
            name.len()
        ));
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.';
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|&c| ok_char(c)) || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!(
            "{name:?} must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn label_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name part of {name:?} must be 1-63 characters"));
    }
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if !b
        .iter()
        .all(|&c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
        || !alnum(b[0])
        || !alnum(b[b.len() - 1])
    {
        return Err(format!(
            "{name:?} must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a label or annotation key: `[prefix/]name`, prefix a DNS subdomain.
pub fn qualified_name(key: &str) -> Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(|e| format!("prefix of {key:?}: {e}"))?;
            label_name(name)
        }
        None => label_name(key),
    }
}

/// Checks a label value: empty, or at most 63 characters shaped like a label name.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        label_name(value)
    }
}

/// Validates label keys and values under `field`.
pub fn labels(errors: &mut Errors, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        errors.check(format!("{field}[{k}]"), qualified_name(k));
        errors.check(format!("{field}[{k}]"), label_value(v));
    }
}

/// Parses an IPv4 or IPv6 CIDR (`10.0.0.0/16`, with a prefix length: no netmask, no bare
/// address) with `ipnetwork`, and checks that no host bits are set.
pub fn cidr(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a CIDR (expected ADDRESS/PREFIX)"))?;
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
    let prefix: u8 = Some(len)
        .filter(|l| l.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| format!("{text:?}: prefix length {len:?} is not a number"))?;
    let net = ipnetwork::IpNetwork::new(ip, prefix).map_err(|_| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        format!("{text:?}: prefix length {prefix} exceeds {max}")
    })?;
    if net.network() != ip {
        return Err(format!("{text:?} has host bits set"));
    }
    Ok((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns_label("dev-1").is_ok());
        assert!(dns_label("Dev").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("a.b-c").is_ok());
        assert!(dns_subdomain("a/b").is_err());
        assert!(dns_subdomain("").is_err());
    }

    #[test]
    fn label_keys() {
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("topology.kubernetes.io/zone").is_ok());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("bad value").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(cidr("10.0.0.0/16").is_ok());
        assert!(cidr("10.0.0.1/16").is_err());
        assert!(cidr("10.0.0.1/32").is_ok());
        assert!(cidr("0.0.0.0/0").is_ok());
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("fd00::/64").is_ok());
        assert!(cidr("fd00::1/64").is_err());
        assert!(cidr("10.0.0.0").is_err());
        assert!(cidr("nope/8").is_err());
        // A netmask, a sign or an empty length is not a prefix length.
        for bad in [
            "10.0.0.0/255.255.0.0",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "fd00::/129",
        ] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(
            cidr("10.0.0.0/33").unwrap_err(),
            "\"10.0.0.0/33\": prefix length 33 exceeds 32"
        );
    }
}
