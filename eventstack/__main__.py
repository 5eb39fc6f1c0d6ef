from eventstack.cli import main

main()
