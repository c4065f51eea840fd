# SPDX-License-Identifier: Apache-2.0
# bash completion for byokctl
_byokctl() {
    local cur prev words cword
    _init_completion || return
    local commands="status watch health wait check-config version"
    case $prev in
        --socket) _filedir sock; return ;;
        check-config) _filedir toml; return ;;
        --timeout) return ;;
    esac
    local i cmd=
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            status|watch|health|wait|check-config|version) cmd=${words[i]}; break ;;
        esac
    done
    case $cmd in
        "") COMPREPLY=($(compgen -W "--socket $commands" -- "$cur")) ;;
        status|watch) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
        wait) COMPREPLY=($(compgen -W "--unlocked --timeout" -- "$cur")) ;;
    esac
} && complete -F _byokctl byokctl
