"""IsoFLOP analysis: Chinchilla Approaches 1-3, figures and budget planning (docs/analysis.md).

CLI: python -m analysis fit PATH... --out DIR | python -m analysis plan --fit FILE --flops C.
No torch import anywhere in this package; nothing heavy is imported here.
"""
