"""The distillation tool, `specdec distill`: trains a small draft on a target's own answers (the
shipped default draft was made with it). Its prompt list, prompts.txt, is package data."""
