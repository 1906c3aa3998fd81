"""The models, and nothing that trains or probes them: `dae` (the paper's two-layer ReLU DAE), `toy` (the toy
diffusion model), `unets` (the diffusers UNets and the text-to-image pipeline), `text` (CLIP's tokenizer and the small
text encoder), `pipelines` (generation with any `StableDiffusionPipeline`) and `sd14` (Stable Diffusion v1.4, its
stand-in, and every SD1.4 fact the kit uses)."""
