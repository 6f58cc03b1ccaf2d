//! The tiny, deterministic command set `ExecContainerCommand` runs against a simulated
//! container: `echo`, `printf` (`%s`, `\n`, `\t`), `env`/`printenv [NAME]`, `hostname`,
//! `cat` (stdin, `/etc/hostname`, `/proc/self/environ`), `true`, `false`, `sleep N`,
//! `sh -c 'exit N'` (and `sh -c` of any one command here), and `sh`/`bash` without `-c`: a
//! line-reading shell running each line as a command until `exit [N]`.
//!
//! A [`Program`] is fed stdin and says what it writes and when it exits, so the same command
//! runs synchronously (no stdin) or in a WebSocket session.

use std::time::Duration;

/// What the command can see of its container.
#[derive(Debug, Clone, Default)]
pub struct Container {
    pub hostname: String,
    pub env: Vec<(String, String)>,
}

/// What a program does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Output(String),
    /// Waits this long before going on (`sleep`).
    Sleep(Duration),
    Exit(i32),
}

/// The longest `sleep` the simulator honours.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A running command.
#[derive(Debug)]
pub enum Program {
    /// Has nothing more to read: its effects were given at start.
    Done,
    /// `cat` without a file: echoes stdin until it ends.
    Cat,
    /// A shell reading lines; `prompt` with a terminal.
    Shell { line: String, prompt: bool },
}

fn run_simple(argv: &[String], container: &Container) -> Vec<Effect> {
    let program = argv[0].rsplit('/').next().unwrap_or_default();
    let args = &argv[1..];
    let out = |text: String| vec![Effect::Output(text), Effect::Exit(0)];
    let fail = |text: String, code| vec![Effect::Output(text), Effect::Exit(code)];
    match program {
        "echo" => out(format!("{}\n", args.join(" "))),
        "printf" => match args.split_first() {
            Some((format, values)) => out(printf(format, values)),
            None => fail("printf: usage: printf format [arguments]\n".into(), 2),
        },
        "hostname" => out(format!("{}\n", container.hostname)),
        "env" => out(container
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()),
        "printenv" => match args.first() {
            None => out(container
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect()),
            Some(name) => match container.env.iter().find(|(k, _)| k == name) {
                Some((_, value)) => out(format!("{value}\n")),
                None => vec![Effect::Exit(1)],
            },
        },
        "cat" => match args.first().map(String::as_str) {
            Some("/etc/hostname") => out(format!("{}\n", container.hostname)),
            Some("/proc/self/environ") => out(container
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}\0"))
                .collect()),
            Some(path) => fail(format!("cat: {path}: No such file or directory\n"), 1),
            None => Vec::new(),
        },
        "true" => vec![Effect::Exit(0)],
        "false" => vec![Effect::Exit(1)],
        "sleep" => match args.first().and_then(|s| s.parse::<f64>().ok()) {
            Some(seconds) if seconds >= 0.0 && seconds.is_finite() => vec![
                Effect::Sleep(Duration::from_secs_f64(seconds).min(MAX_SLEEP)),
                Effect::Exit(0),
            ],
            _ => fail("sleep: invalid time interval\n".into(), 1),
        },
        "exit" => vec![Effect::Exit(
            args.first().and_then(|c| c.parse().ok()).unwrap_or(0),
        )],
        _ => fail(format!("{program}: command not found\n"), 127),
    }
}

/// `printf` with `%s`, `%%`, `\n`, `\t`, reusing the format while arguments remain.
fn printf(format: &str, values: &[String]) -> String {
    let mut out = String::new();
    let mut values = values.iter();
    loop {
        let mut used = false;
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek().copied()) {
                ('%', Some('s')) => {
                    chars.next();
                    used = true;
                    out.push_str(values.next().map(String::as_str).unwrap_or(""));
                }
                ('%', Some('%')) => {
                    chars.next();
                    out.push('%');
                }
                ('\\', Some('n')) => {
                    chars.next();
                    out.push('\n');
                }
                ('\\', Some('t')) => {
                    chars.next();
                    out.push('\t');
                }
                (c, _) => out.push(c),
            }
        }
        if !used || values.len() == 0 {
            return out;
        }
    }
}

/// Splits a shell line into words: whitespace, with single and double quotes.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

fn is_shell(program: &str) -> bool {
    matches!(program.rsplit('/').next(), Some("sh" | "bash" | "ash"))
}

impl Program {
    /// Starts `argv`: the program and what it does before reading any input.
    pub fn start(argv: &[String], container: &Container, tty: bool) -> (Program, Vec<Effect>) {
        let Some(first) = argv.first() else {
            return (Program::Done, vec![Effect::Exit(0)]);
        };
        if is_shell(first) {
            return match argv.get(1).map(String::as_str) {
                Some("-c") => {
                    let script = words(argv.get(2).map(String::as_str).unwrap_or(""));
                    if script.is_empty() {
                        return (Program::Done, vec![Effect::Exit(0)]);
                    }
                    Program::start(&script, container, tty)
                }
                _ => {
                    let prompt = if tty {
                        vec![Effect::Output("$ ".into())]
                    } else {
                        Vec::new()
                    };
                    (
                        Program::Shell {
                            line: String::new(),
                            prompt: tty,
                        },
                        prompt,
                    )
                }
            };
        }
        let effects = run_simple(argv, container);
        if effects.is_empty() {
            (Program::Cat, Vec::new())
        } else {
            (Program::Done, effects)
        }
    }

    /// Feeds stdin.
    pub fn input(&mut self, bytes: &str, container: &Container) -> Vec<Effect> {
        match self {
            Program::Done => Vec::new(),
            Program::Cat => vec![Effect::Output(bytes.to_string())],
            Program::Shell { line, prompt } => {
                let mut effects = Vec::new();
                for c in bytes.chars() {
                    if *prompt {
                        // A terminal echoes what is typed.
                        effects.push(Effect::Output(match c {
                            '\r' | '\n' => "\r\n".to_string(),
                            c => c.to_string(),
                        }));
                    }
                    if c != '\n' && c != '\r' {
                        line.push(c);
                        continue;
                    }
                    let argv = words(&std::mem::take(line));
                    if argv.first().is_some_and(|w| w == "exit") {
                        let code = argv.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                        effects.push(Effect::Exit(code));
                        *self = Program::Done;
                        return effects;
                    }
                    if !argv.is_empty() {
                        effects.extend(
                            run_simple(&argv, container)
                                .into_iter()
                                .filter(|e| !matches!(e, Effect::Exit(_))),
                        );
                    }
                    if *prompt {
                        effects.push(Effect::Output("$ ".into()));
                    }
                }
                effects
            }
        }
    }

    /// Stdin has ended.
    pub fn end_of_input(&mut self) -> Vec<Effect> {
        match std::mem::replace(self, Program::Done) {
            Program::Done => Vec::new(),
            Program::Cat | Program::Shell { .. } => vec![Effect::Exit(0)],
        }
    }
}

/// Runs `argv` without stdin: its output and exit code (sleeps are skipped).
pub fn run_to_end(argv: &[String], container: &Container) -> (String, i32) {
    let (mut program, mut effects) = Program::start(argv, container, false);
    if !effects.iter().any(|e| matches!(e, Effect::Exit(_))) {
        effects.extend(program.end_of_input());
    }
    let mut output = String::new();
    for effect in effects {
        match effect {
            Effect::Output(text) => output.push_str(&text),
            Effect::Sleep(_) => {}
            Effect::Exit(code) => return (output, code),
        }
    }
    (output, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn container() -> Container {
        Container {
            hostname: "web".into(),
            env: vec![("A".into(), "1".into())],
        }
    }

    #[test]
    fn commands_run_deterministically() {
        let c = container();
        assert_eq!(
            run_to_end(&argv(&["echo", "a", "b c"]), &c),
            ("a b c\n".into(), 0)
        );
        assert_eq!(
            run_to_end(&argv(&["printf", "[%s]", "a", "b c"]), &c),
            ("[a][b c]".into(), 0)
        );
        assert_eq!(
            run_to_end(&argv(&["sh", "-c", "exit 3"]), &c),
            (String::new(), 3)
        );
        assert_eq!(
            run_to_end(&argv(&["/bin/sh", "-c", "echo 'x  y'"]), &c),
            ("x  y\n".into(), 0)
        );
        assert_eq!(run_to_end(&argv(&["printenv", "A"]), &c), ("1\n".into(), 0));
        assert_eq!(
            run_to_end(&argv(&["cat", "/etc/hostname"]), &c),
            ("web\n".into(), 0)
        );
        assert_eq!(run_to_end(&argv(&["cat", "/nope"]), &c).1, 1);
        assert_eq!(run_to_end(&argv(&["ls"]), &c).1, 127);
        assert_eq!(run_to_end(&argv(&["cat"]), &c), (String::new(), 0));
    }

    #[test]
    fn cat_and_the_shell_read_stdin() {
        let c = container();
        let (mut cat, effects) = Program::start(&argv(&["cat"]), &c, false);
        assert!(effects.is_empty());
        assert_eq!(cat.input("hi\n", &c), [Effect::Output("hi\n".into())]);
        assert_eq!(cat.end_of_input(), [Effect::Exit(0)]);

        let (mut shell, effects) = Program::start(&argv(&["sh"]), &c, true);
        assert_eq!(effects, [Effect::Output("$ ".into())]);
        let typed: String = shell
            .input("echo hi\r", &c)
            .into_iter()
            .filter_map(|e| match e {
                Effect::Output(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(typed, "echo hi\r\nhi\n$ ");
        assert_eq!(shell.input("exit 4\n", &c).last(), Some(&Effect::Exit(4)));
    }
}
