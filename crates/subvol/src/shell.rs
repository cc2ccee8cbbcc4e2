//! Shell completion scripts. clap writes the grammar (subcommands, options,
//! values) from the same definitions as `--help`; the glue added here asks
//! the pool for subvolume and snapshot names (`subvol complete-names`, which
//! reads directory entries only, never waits on the pool lock, and prints
//! only names that pass the name rules).

use clap::CommandFactory;
use clap_complete::Shell;

/// Subcommands whose operands are (or may be) existing NAME or NAME@SNAP.
fn commands_taking_names() -> Vec<String> {
    let no_names = ["create", "pool", "completions", "man", "complete-names", "build-manifests", "guard", "help"];
    crate::cli::Cli::command()
        .get_subcommands()
        .filter(|c| c.get_arguments().any(|a| a.is_positional()))
        .map(|c| c.get_name().to_string())
        .filter(|n| !no_names.contains(&n.as_str()))
        .collect()
}

/// Every option that takes a value other than a NAME@SNAP (`--from` takes
/// one): after such an option, the next word is its value, not a name.
fn options_taking_values() -> Vec<String> {
    fn walk(c: &clap::Command, out: &mut Vec<String>) {
        for a in c.get_arguments().filter(|a| !a.is_positional() && a.get_action().takes_values()) {
            out.extend(a.get_long().map(|l| format!("--{l}")));
            out.extend(a.get_short().map(|s| format!("-{s}")));
        }
        for s in c.get_subcommands() {
            walk(s, out);
        }
    }
    let mut out = Vec::new();
    walk(&crate::cli::Cli::command(), &mut out);
    out.retain(|o| o != "--from");
    out.sort();
    out.dedup();
    out
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = crate::cli::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "subvol", &mut buf);
    let grammar = String::from_utf8_lossy(&buf).into_owned();
    let commands = commands_taking_names().join(" ");
    let valued = options_taking_values().join(" ");
    match shell {
        Shell::Bash => bash(&grammar, &commands, &valued),
        Shell::Fish => fish(&grammar, &commands),
        Shell::Zsh => zsh(&grammar),
        _ => grammar,
    }
}

fn bash(grammar: &str, commands: &str, valued: &str) -> String {
    // clap's function keeps its job (options, subcommands); ours runs it,
    // then adds names where an operand goes.
    let grammar = grammar.replace("_subvol()", "_subvol_grammar()").replace("-F _subvol ", "-F _subvol_names ");
    format!(
        r#"{grammar}
_subvol_names() {{
    _subvol_grammar "$@"
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmd="" i w
    local -a pool=()
    [[ $cur == -* ]] && return 0
    [[ " {valued} " == *" $prev "* ]] && return 0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if [[ $w == --pool ]]; then pool=(--pool "${{COMP_WORDS[i+1]}}"); ((i++)); continue; fi
        if [[ $w == --pool=* ]]; then pool=(--pool "${{w#--pool=}}"); continue; fi
        [[ " {valued} " == *" $w "* ]] && {{ ((i++)); continue; }}
        [[ $w == -* ]] && continue
        [[ -z $cmd ]] && cmd=$w
    done
    [[ " {commands} " == *" $cmd "* ]] || return 0
    # '@' breaks words for readline: match the whole NAME@SNAP typed so far,
    # then hand back only the part after the '@', which is what gets replaced.
    local line=${{COMP_LINE:0:COMP_POINT}}
    local full=${{line##*[[:space:]]}} IFS=$'\n'
    local -a found=($(compgen -W "$(subvol "${{pool[@]}}" complete-names --snapshots 2>/dev/null)" -- "$full"))
    if [[ $full == *@* && $COMP_WORDBREAKS == *@* ]]; then
        found=("${{found[@]#"${{full%@*}}@"}}")
    fi
    COMPREPLY+=("${{found[@]}}")
}}
"#
    )
}

fn fish(grammar: &str, commands: &str) -> String {
    format!(
        "{grammar}\ncomplete -c subvol -n '__fish_seen_subcommand_from {commands}' -f -a '(subvol complete-names --snapshots 2>/dev/null)'\n"
    )
}

fn zsh(grammar: &str) -> String {
    // clap leaves free-form operands to `_default`; NAME operands get names.
    let mut out = grammar.to_string();
    for id in ["name", "names", "snapshot", "old", "src"] {
        out = out.replace(&format!(":{id}:_default'"), &format!(":{id}:_subvol_object_names'"));
    }
    out.push_str(
        "\n_subvol_object_names() {\n    local -a names\n    names=(${(f)\"$(subvol complete-names --snapshots 2>/dev/null)\"})\n    compadd -a names\n}\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_offered_for_operands_of_existing_objects_only() {
        let c = commands_taking_names();
        for n in ["info", "mount", "umount", "delete", "snapshot", "clone", "rollback", "send", "hold"] {
            assert!(c.contains(&n.to_string()), "{n} missing from {c:?}");
        }
        assert!(!c.contains(&"create".to_string()));
        let v = options_taking_values();
        assert!(v.contains(&"--size".to_string()) && v.contains(&"--pool".to_string()), "{v:?}");
        assert!(!v.contains(&"--json".to_string()));
        assert!(!v.contains(&"--from".to_string()), "--from takes a snapshot name");
    }

    #[test]
    fn every_shell_gets_the_name_glue() {
        assert!(script(Shell::Bash).contains("complete -F _subvol_names"));
        assert!(script(Shell::Fish).contains("complete-names --snapshots"));
        let z = script(Shell::Zsh);
        assert!(z.contains(":name:_subvol_object_names'"), "clap's zsh output changed shape");
    }
}
