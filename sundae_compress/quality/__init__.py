"""Quality control: choosing a budget (Gaussian count and codec preset) from a goal the user
states in quality or bytes (``--target-psnr``, ``--target-size``): :mod:`.targets` holds the search,
:mod:`.stages` binds it to the real pipeline (prune, fine-tune, encode, novel-view evaluation)."""
