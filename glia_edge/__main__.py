"""``python -m glia_edge`` runs the ``glia-edge`` CLI; ``torchrun --nproc_per_node N -m glia_edge train ...`` runs DDP."""
from glia_edge.cli import main

if __name__ == "__main__":
    main()
