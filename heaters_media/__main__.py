from heaters_media.cli import main

main()
