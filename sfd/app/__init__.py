"""``sfd app``: a local web page to upscale a photo with one or two models and see its quality (SFD-IQA with
its map, NIQE, CLIP-IQA). ``core``: the work (no Gradio); ``ui``: the page (Gradio, imported only by
``sfd app``); ``commands``: the command line. Install with ``pip install 'sfd[app]'``."""
