"""The `specdec` command line (serve, up, generate, health, prepare, bench, distill) and the local
launcher that starts the three services as processes. Every command imports what it needs when it
runs, so the light ones (health, --help, generate) never load torch or transformers."""
