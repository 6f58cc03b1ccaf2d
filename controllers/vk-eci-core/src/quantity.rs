//! Kubernetes resource quantities (`500m`, `1.5`, `512Mi`, `1G`, `2e9`) as numbers.

/// The value of a quantity in base units (cores, bytes); `None` when it is not a quantity.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (number, exponent) = match number.find(['e', 'E']) {
        Some(at) if suffix.is_empty() => (&number[..at], number[at + 1..].parse::<i32>().ok()?),
        Some(_) => return None,
        None => (number, 0),
    };
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        _ => return None,
    };
    let result = value * multiplier * 10f64.powi(exponent);
    (result.is_finite() && result >= 0.0).then_some(result)
}

/// Bytes as GiB.
pub fn gib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0 * 1024.0)
}

/// A bandwidth such as `40M` or `1G` (decimal, bits per second) as a whole number.
pub fn bandwidth(text: &str) -> Option<i64> {
    parse(text)
        .map(|bits| bits.round() as i64)
        .filter(|bits| *bits > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_memory_and_exponents() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(gib(parse("3Gi").unwrap()), 3.0);
        assert_eq!(parse("lots"), None);
        assert_eq!(parse("1Xi"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(bandwidth("40M"), Some(40_000_000));
        assert_eq!(bandwidth("0"), None);
    }
}
