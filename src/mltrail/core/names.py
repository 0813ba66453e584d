"""Readable generated run names, e.g. ``brave-otter-417``."""

from __future__ import annotations

import random

_ADJECTIVES = (
    "amber agile bold brave bright calm clever crisp daring deft eager early fair fancy fast "
    "fierce gentle glad golden grand happy hardy honest humble jolly keen kind lively lucky "
    "merry mighty nimble noble patient placid polite proud quick quiet rapid rare robust shiny "
    "silent sleek smart snowy solid steady sunny swift tidy tough upbeat vivid warm wise witty "
    "young zesty"
).split()
_NOUNS = (
    "ant badger bear bee bison crane crow deer dolphin eagle falcon ferret finch fox gecko "
    "goose hare hawk heron ibis jaguar koala lark lemur lion lynx mole moose newt otter owl "
    "panda panther parrot pelican pike puffin quail rabbit raven robin salmon seal shark "
    "sparrow squid stork swan tiger toad trout turtle viper walrus whale wolf wren yak zebra"
).split()

_rng = random.Random()


def generate_run_name() -> str:
    return f"{_rng.choice(_ADJECTIVES)}-{_rng.choice(_NOUNS)}-{_rng.randint(1, 999)}"
