//! Instance specs: which vCPU/memory pairs ECI sells, rounding requests up to one, and the
//! `<cpu>-<memory>Gi` / `ecs.<family>.<size>` notations.

/// vCPU → allowed memory sizes (GiB), as ECI sells them.
const SPECS: &[(f64, &[f64])] = &[
    (0.25, &[0.5, 1.0]),
    (0.5, &[1.0, 2.0]),
    (1.0, &[2.0, 4.0, 8.0]),
    (2.0, &[1.0, 2.0, 4.0, 8.0, 16.0]),
    (4.0, &[4.0, 8.0, 16.0, 32.0]),
    (8.0, &[4.0, 8.0, 16.0, 32.0, 64.0]),
    (12.0, &[12.0, 24.0, 48.0, 96.0]),
    (16.0, &[16.0, 32.0, 64.0, 128.0]),
    (24.0, &[24.0, 48.0, 96.0, 192.0]),
    (32.0, &[32.0, 64.0, 128.0, 256.0]),
    (52.0, &[96.0, 192.0, 384.0]),
    (64.0, &[128.0, 256.0, 512.0]),
];

pub fn is_valid(cpu: f64, memory: f64) -> bool {
    SPECS
        .iter()
        .any(|(c, mems)| *c == cpu && mems.contains(&memory))
}

/// The smallest sold spec with at least `cpu` vCPU and `memory` GiB.
pub fn round_up(cpu: f64, memory: f64) -> Option<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    for (c, mems) in SPECS {
        if *c < cpu {
            continue;
        }
        for m in mems.iter() {
            if *m >= memory {
                let better = match best {
                    None => true,
                    Some((bc, bm)) => (*c, *m) < (bc, bm),
                };
                if better {
                    best = Some((*c, *m));
                }
            }
        }
    }
    best
}

pub fn format_spec(cpu: f64, memory: f64) -> String {
    format!("{}-{}Gi", trim(cpu), trim(memory))
}

fn trim(value: f64) -> String {
    let text = format!("{value}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// vCPU and memory of `2-4Gi`, `2-4`, or a known-shaped ECS type such as `ecs.c6.xlarge`.
pub fn parse(spec: &str) -> Option<(f64, f64)> {
    if let Some(rest) = spec.strip_prefix("ecs.") {
        let mut parts = rest.split('.');
        let family = parts.next()?;
        let size = parts.next()?;
        let cpu = match size {
            "large" => 2.0,
            "xlarge" => 4.0,
            other => other.strip_suffix("xlarge")?.parse::<f64>().ok()? * 4.0,
        };
        let ratio = match family.chars().next()? {
            'c' => 2.0,
            'g' => 4.0,
            'r' => 8.0,
            _ => 2.0,
        };
        return Some((cpu, cpu * ratio));
    }
    let (cpu, memory) = spec.split_once('-')?;
    let memory = memory.strip_suffix("Gi").unwrap_or(memory);
    let cpu: f64 = cpu.parse().ok()?;
    let memory: f64 = memory.parse().ok()?;
    (cpu > 0.0 && memory > 0.0).then_some((cpu, memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_the_smallest_sold_spec() {
        assert_eq!(round_up(0.1, 0.2), Some((0.25, 0.5)));
        assert_eq!(round_up(1.5, 3.0), Some((2.0, 4.0)));
        assert_eq!(round_up(3.0, 2.0), Some((4.0, 4.0)));
        assert_eq!(round_up(100.0, 1.0), None);
        assert!(is_valid(2.0, 4.0));
        assert!(!is_valid(3.0, 6.0));
    }

    #[test]
    fn parses_both_notations() {
        assert_eq!(parse("2-4Gi"), Some((2.0, 4.0)));
        assert_eq!(parse("0.5-1"), Some((0.5, 1.0)));
        assert_eq!(parse("ecs.c6.xlarge"), Some((4.0, 8.0)));
        assert_eq!(parse("ecs.g6.2xlarge"), Some((8.0, 32.0)));
        assert_eq!(parse("big"), None);
        assert_eq!(format_spec(0.5, 1.0), "0.5-1Gi");
    }
}
