"""Render one stamp bank: heuristic masks through a GAN checkpoint ({ckpt}) or the classic renderer.

JAX (and its compilation cache) is loaded by `make_bank` only after the masks are made in worker
processes, so the workers never carry a JAX runtime.
"""

# Guarded: worker processes start by 'spawn', which re-imports this script as __mp_main__.
if __name__ == "__main__":
    from billetjax.runtime import log_to

    log_to(snakemake.log[0])

    from billetjax.synth.pool import make_bank, real_categories

    checkpoint = int(snakemake.wildcards.ckpt) if "ckpt" in snakemake.wildcards.keys() else None
    make_bank(
        snakemake.params.config,
        "gan" if checkpoint is not None else "classic",
        snakemake.output[0],
        snakemake.params.stamp["size_px"],
        snakemake.params.stamp["margin"],
        checkpoint=checkpoint,
        generator_path=snakemake.input.get("generator"),
        workers=snakemake.threads,
        categories=real_categories(snakemake.input.real),
    )
