"""Characters: persona cards, sessions, memory and packets for game NPCs (issue 9).

A character is a card (``cards``), imported from ocak's own YAML/JSON format or
a SillyTavern ``chara_card_v2`` (``tavern``). Each turn the ``service`` picks a
speaker (``turns``), builds a prompt whose persona and history form a stable
prefix (``prompt``), with lorebook entries (``lorebook``), recalled memories
(``memory``) and the relationship (``relationship``) at the end, and asks the
serving model for a packet constrained to the card's schema (``packet``);
stage directions are moved out of the spoken text (``directions``). Sessions,
turns and memories persist in SQLite (``ocak.characters.store``).
"""
