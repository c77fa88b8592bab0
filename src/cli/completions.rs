//! `anamo completions SHELL`: a shell completion script on standard output.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

const INSTALL: &str = "\
Install:
  bash  anamo completions bash > ~/.local/share/bash-completion/completions/anamo
  zsh   anamo completions zsh > ~/.zfunc/_anamo
        (with fpath+=(~/.zfunc) before compinit in ~/.zshrc)
  fish  anamo completions fish > ~/.config/fish/completions/anamo.fish
Open a new shell afterwards.";

#[derive(Debug, Args)]
#[command(after_help = INSTALL)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "anamo", &mut script);
    super::output::out!("{}", String::from_utf8_lossy(&script));
    Ok(ExitCode::SUCCESS)
}
