"""Real diffusers pipelines with tiny random-weight components, built offline."""

from __future__ import annotations

import torch


def _eval(pipe):
    """Freshly constructed modules are in training mode (DiT's label dropout would make outputs random)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def tiny_dit_pipeline(num_layers: int = 4):
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        sample_size=8,
        num_layers=num_layers,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,  # DiTPipeline uses 1000 as the null label
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
    )
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4, sample_size=16)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return _eval(pipe)


def tiny_flux_pipeline(num_layers: int = 2, num_single_layers: int = 3):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    vae = AutoencoderKL(
        block_out_channels=(8,),
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return _eval(pipe)


def flux_prompt_embeds(batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        prompt_embeds=torch.randn(batch, 6, 32, generator=g),
        pooled_prompt_embeds=torch.randn(batch, 32, generator=g),
    )


def tiny_wan_pipeline(num_layers: int = 3):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        transformer=transformer,
        vae=vae,
        scheduler=UniPCMultistepScheduler(flow_shift=3.0, prediction_type="flow_prediction", use_flow_sigmas=True),
    )
    pipe.set_progress_bar_config(disable=True)
    return _eval(pipe)


def wan_prompt_embeds(batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        prompt_embeds=torch.randn(batch, 8, 32, generator=g),
        negative_prompt_embeds=torch.randn(batch, 8, 32, generator=g),
    )


def sample_tiny_dit(pipe, labels, steps: int, seed: int = 0):
    """Images of the tiny DiT pipeline at CFG 1.5, as tensors in [0, 1]."""
    return pipe(class_labels=list(labels), num_inference_steps=steps, guidance_scale=1.5,
                generator=torch.Generator().manual_seed(seed), output_type="pt").images
