//! Build-time documentation for people who install pallium: the man pages
//! (`pallium(1)` and one page per subcommand, clap_mangen) and bash, zsh
//! and fish completions (clap_complete) that also complete profile names,
//! all from the same clap definition the binary parses with (`src/cli.rs`).
//!
//! Written under `$OUT_DIR/man/` and `$OUT_DIR/completions/`;
//! `extra/package.sh` collects them from there.

use std::path::Path;
use std::{env, fs, io};

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code, unreachable_pub)]
#[path = "src/cli.rs"]
mod cli;

/// A shell function listing profile names (the files a name resolves to).
const PROFILE_DIRS: &str =
    "${XDG_CONFIG_HOME:-$HOME/.config}/pallium/profiles /etc/pallium/profiles";
const PROFILE_SUBCOMMANDS: &str = "run exec shell stop check audit";

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cli::Cli::command(), &man)?;
    let comp = out.join("completions");
    fs::create_dir_all(&comp)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli::Cli::command(), "pallium", &mut buf);
        let text = String::from_utf8(buf).expect("clap_complete writes UTF-8");
        let (name, text) = match shell {
            Shell::Bash => ("pallium", bash(&text)),
            Shell::Zsh => ("_pallium", zsh(&text)),
            _ => ("pallium.fish", fish(&text)),
        };
        fs::write(comp.join(name), text)?;
    }
    Ok(())
}

/// Bash: the generated function, then profile names offered where a
/// PROFILE is the first word after a subcommand that takes one.
fn bash(generated: &str) -> String {
    // Everything up to the generated registration, which ours replaces.
    let body = generated
        .find("\nif [[ \"${BASH_VERSINFO")
        .or_else(|| generated.find("\ncomplete -F _pallium"))
        .map_or(generated, |i| &generated[..i]);
    format!(
        r#"{body}
_pallium_profiles() {{
    local d f
    for d in {PROFILE_DIRS}; do
        for f in "$d"/*.json; do [ -e "$f" ] && basename "$f" .json; done
    done
    echo default
}}

_pallium_with_profiles() {{
    _pallium "$@"
    local cur=${{COMP_WORDS[COMP_CWORD]}} i words=0
    case " {PROFILE_SUBCOMMANDS} " in *" ${{COMP_WORDS[1]}} "*) ;; *) return ;; esac
    for ((i = 2; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            -s|--session|--namespace|--pid-file|--loglevel) ((i++)) ;;
            -*) ;;
            *) words=$((words + 1)) ;;
        esac
    done
    if [ "$words" -eq 0 ] && [[ $cur != -* ]]; then
        COMPREPLY+=($(compgen -W "$(_pallium_profiles)" -- "$cur"))
    fi
}}
complete -F _pallium_with_profiles -o bashdefault -o default pallium
"#
    )
}

/// Zsh: every PROFILE positional completes profile names (and files).
fn zsh(generated: &str) -> String {
    let mut out = generated
        .lines()
        .map(|l| {
            if l.contains("':profile -- ") {
                l.replace(":_default'", ":_pallium_profiles'")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push_str(&format!(
        r#"

(( $+functions[_pallium_profiles] )) ||
_pallium_profiles() {{
    local -a names
    local d
    for d in {PROFILE_DIRS}; do
        names+=($d/*.json(N:t:r))
    done
    names+=(default)
    _alternative 'profiles:profile:compadd -a names' 'files:file:_files'
}}
"#
    ));
    out
}

/// Fish: profile names for the subcommands that take one.
fn fish(generated: &str) -> String {
    format!(
        r#"{generated}
function __pallium_profiles
    for d in (string split ' ' -- "{PROFILE_DIRS}")
        for f in (eval echo $d)/*.json
            basename $f .json
        end
    end
    echo default
end
complete -c pallium -n "__fish_seen_subcommand_from {PROFILE_SUBCOMMANDS}" -a "(__pallium_profiles)"
"#
    )
}
